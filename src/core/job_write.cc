#include "uppzy/job_write.h"

#include <utility>

namespace uppzy {
namespace {

JobWrite Base(const HeldJob& job, JobState new_state) {
  JobWrite w;
  w.id = job.id;
  w.expected_state = job.row_state;
  w.expected_attempt = job.attempt;
  w.new_state = new_state;
  w.polls = job.polls;
  return w;
}

}  // namespace

JobWrite WriteAccepted(const HeldJob& job, const std::string& request_id, TimePoint submitted_at,
                       TimePoint poll_deadline) {
  JobWrite w = Base(job, JobState::kPolling);
  w.keep_lock = true;
  w.request_id = request_id;
  w.submitted_at = submitted_at;
  w.poll_deadline = poll_deadline;
  w.polls = 0;
  return w;
}

JobWrite WriteCompleted(const HeldJob& job, std::string answer, std::string result_json) {
  JobWrite w = Base(job, JobState::kCompleted);
  w.answer = std::move(answer);
  w.result_json = std::move(result_json);
  return w;
}

void SetAnswerTimes(JobWrite& w, TimePoint accepted_at, TimePoint not_ready_at,
                    std::optional<TimePoint> seen_at) {
  constexpr int64_t kDayMs = 86'400'000;
  const int64_t lo = std::chrono::duration_cast<Millis>(not_ready_at - accepted_at).count();
  if (lo < 0 || lo > kDayMs) return;
  std::optional<int64_t> hi;
  if (seen_at) {
    hi = std::chrono::duration_cast<Millis>(*seen_at - accepted_at).count();
    if (*hi <= lo || *hi > kDayMs) return;
  }
  w.answer_ready_after_ms = static_cast<int>(lo);
  if (hi) w.answer_seen_after_ms = static_cast<int>(*hi);
}

JobWrite WriteFinishedAttempt(const HeldJob& job, const Transition& t, TimePoint now) {
  const bool retry = t.action == Action::kRetry;
  JobWrite w = Base(job, retry ? JobState::kRetrying : JobState::kFailed);
  if (retry) {
    w.run_at = t.at;
    w.clear_request = true;
  }
  ErrorEntry e;
  e.attempt = job.attempt;
  e.at = now;
  e.kind = t.error_kind;
  e.http_status = t.http_status;
  e.message = t.message;
  e.request_id = job.request_id;
  w.error = std::move(e);
  return w;
}

JobWrite WriteHandBack(const HeldJob& job, std::optional<ErrorEntry> error) {
  JobWrite w;
  if (job.row_state == JobState::kPolling) {
    w = Base(job, JobState::kPolling);
    w.expire_lease = true;
  } else {
    // Never sent, or refused before Uppzy did anything with it: the attempt is returned.
    w = Base(job, job.attempt - 1 > 0 ? JobState::kRetrying : JobState::kQueued);
    w.attempts_delta = -1;
    w.clear_request = true;
  }
  w.error = std::move(error);
  return w;
}

ErrorEntry RejectionEntry(int attempt, const std::string& reason, TimePoint now) {
  ErrorEntry e;
  e.attempt = attempt;
  e.at = now;
  e.kind = ErrorKind::kInvalidResponse;
  e.message = "the database refused to store this outcome: " + reason;
  return e;
}

JobWrite WriteRejected(const JobWrite& refused, const std::string& reason, TimePoint now) {
  JobWrite w;
  w.id = refused.id;
  w.expected_state = refused.expected_state;
  w.expected_attempt = refused.expected_attempt;
  w.new_state = JobState::kFailed;
  w.polls = refused.polls;
  w.error = RejectionEntry(refused.expected_attempt, reason, now);
  if (refused.request_id) w.error->request_id = *refused.request_id;
  return w;
}

}  // namespace uppzy
