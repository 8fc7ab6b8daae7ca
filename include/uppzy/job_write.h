// A change to one claimed row, as a value. The runtime builds it from a Transition with the named
// constructors below; the store applies many of them in one guarded statement. Pure; never throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "uppzy/job.h"
#include "uppzy/policy.h"

namespace uppzy {

// One entry of chat_jobs.errors: {attempt, at, kind, http_status, message, request_id}.
struct ErrorEntry {
  int attempt = 0;
  TimePoint at{};
  ErrorKind kind = ErrorKind::kNone;
  int http_status = 0;  // 0 is stored as null
  std::string message;
  std::string request_id;  // empty is stored as null
};

struct JobWrite {
  int64_t id = 0;
  // Fencing: the write applies only if the row is still in this state, at this attempt, held by us.
  JobState expected_state = JobState::kSubmitting;
  int expected_attempt = 0;

  JobState new_state = JobState::kSubmitting;
  int attempts_delta = 0;      // -1: a claimed submission handed back uncharged
  bool keep_lock = false;      // still held after the write (accepted: polling under our lease)
  bool expire_lease = false;   // handed back while polling: any worker may adopt it at once
  bool clear_request = false;  // a new submission follows: request_id, submitted_at, poll_deadline reset
  std::optional<std::string> request_id;
  std::optional<TimePoint> submitted_at;
  std::optional<TimePoint> poll_deadline;
  std::optional<int> polls;
  std::optional<TimePoint> run_at;
  std::optional<std::string> answer;
  std::optional<std::string> result_json;
  std::optional<ErrorEntry> error;  // sets error_kind, last_error, last_http_status and appends to errors
  // What the polls saw of the answer's time (migration 0009; see SetAnswerTimes). Unset: unchanged,
  // or cleared by clear_request.
  std::optional<int> answer_ready_after_ms;
  std::optional<int> answer_seen_after_ms;

  // True when the row leaves this worker's hands with this write.
  bool Releases() const { return !keep_lock; }
  int64_t ref() const { return id; }  // the row's name, as DeliveryWrite::ref() names a delivery
};

// What the runtime knows about a job it holds, for building writes.
struct HeldJob {
  int64_t id = 0;
  JobState row_state = JobState::kSubmitting;  // the row's state once earlier writes are applied
  int attempt = 0;
  std::string request_id;
  int polls = 0;

  // The row as a claim (submitting) or an adoption (polling) hands it over.
  static HeldJob Of(const ClaimedJob& c) { return {c.id, c.state, c.attempt, c.request_id, c.polls}; }
};

// submitting -> polling, request_id stored at once (keeps the duplicate-submission window small).
JobWrite WriteAccepted(const HeldJob& job, const std::string& request_id, TimePoint submitted_at,
                       TimePoint poll_deadline);
// polling -> completed.
JobWrite WriteCompleted(const HeldJob& job, std::string answer, std::string result_json);
// Records when the answer became ready, as the polls saw it: not yet at `not_ready_at` (the last poll
// that saw the request in progress, or the acceptance), ready at `seen_at` (the poll that saw it; none
// after a poll timeout). Times count from `accepted_at`. An interval that makes no sense (a clock step,
// ends out of order, over a day) is left out rather than stored: it would mislead the estimate.
void SetAnswerTimes(JobWrite& w, TimePoint accepted_at, TimePoint not_ready_at,
                    std::optional<TimePoint> seen_at);
// -> retrying (run_at = t.at) or failed, from a kRetry / kFail transition; appends the error.
JobWrite WriteFinishedAttempt(const HeldJob& job, const Transition& t, TimePoint now);
// Hands the row back without charging anything: submitting -> queued/retrying with the attempt
// returned; polling -> polling with the lease ended so any worker adopts it. `error`, if given, is
// recorded as an event (used for 401/403 incidents).
JobWrite WriteHandBack(const HeldJob& job, std::optional<ErrorEntry> error);
// Replaces a write the database refused for good (not a lost connection): the row fails, under the
// same guard, with error_kind invalid_response and `reason` in last_error; nothing of the refused
// write's content (answer, result) is stored. So one unstorable reply fails its own row and can never
// wedge the row, or the worker, in a loop of retries.
JobWrite WriteRejected(const JobWrite& refused, const std::string& reason, TimePoint now);
// The error entry of such a write (shared with WriteDeliveryRejected): invalid_response, "the database
// refused to store this outcome: <reason>".
ErrorEntry RejectionEntry(int attempt, const std::string& reason, TimePoint now);

}  // namespace uppzy
