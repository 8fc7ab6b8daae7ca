// The state machine's decisions: what to do with a job given the outcome of one HTTP exchange.
//
// Everything here is pure: no I/O, no clock, no randomness. `now` and the jitter are parameters, so
// every rule is testable with a table of cases. Never throws.
#pragma once

#include <optional>
#include <string>

#include "uppzy/job.h"
#include "uppzy/outcome.h"
#include "uppzy/poll_schedule.h"

namespace uppzy {

struct Policy {
  Millis poll_interval{2500};      // UPPZY_POLL_INTERVAL_MS
  Millis poll_timeout{45000};      // UPPZY_POLL_TIMEOUT_MS
  Millis backoff_base{1000};       // UPPZY_BACKOFF_BASE_MS: first retry delay before jitter
  Millis backoff_max{60000};       // UPPZY_BACKOFF_MAX_MS: cap on any computed backoff
  Millis retry_after_max{600000};  // UPPZY_RETRY_AFTER_MAX_MS: bound on a server's Retry-After
  // UPPZY_POLL_TARGET_DELAY_MS: in adaptive mode, the mean ready-to-stored delay accepted for fewer
  // status calls (see poll_schedule.h).
  Millis poll_target_delay{0};  // 0: 0.58 x poll_interval (1,450 ms at the default 2,500 ms)
};

// The poll schedule's settings from the policy: its interval, timeout and accepted delay (0.58 x the
// interval when unset); gaps of at most 4 intervals.
PollSchedule ScheduleOf(const Policy& policy);

// Which request a job is waiting on.
enum class Phase { kSubmit, kPoll };

// What a decision needs to know about the job.
struct JobContext {
  Phase phase = Phase::kSubmit;
  int attempt = 1;  // number of the current submission, 1-based (attempts after the claim)
  int max_attempts = 3;
  TimePoint poll_deadline{};    // kPoll only
  int poll_errors = 0;          // consecutive failed polls of the current request (in memory only)
  std::string last_poll_error;  // what the latest of those failed polls said (named by a poll_timeout)
  TimePoint accepted_at{};      // kPoll only: when the submission was accepted
  // The poll plan of the job's site (adaptive polling), or null for the fixed tick. Not owned; only
  // read during the call.
  const PollPlan* plan = nullptr;
};

enum class Action {
  kAccept,     // submitting -> polling: store request_id, poll at `at`, give up at `deadline`
  kAwaitPoll,  // stay polling, poll again at `at` (no row write)
  kComplete,   // -> completed, store answer and result
  kRetry,      // -> retrying with run_at = `at`; the error is appended to errors
  kFail,       // -> failed with error_kind
  kIncident,   // 401/403: open a configuration incident, return the job uncharged, pause Uppzy calls
};

struct Transition {
  Action action = Action::kFail;
  TimePoint at{};
  TimePoint deadline{};  // kAccept only
  ErrorKind error_kind = ErrorKind::kNone;
  int http_status = 0;
  std::string message;      // readable reason; never contains message or answer text
  bool poll_error = false;  // kAwaitPoll after a failed poll (counts toward poll_errors)
};

// Exponential backoff with "equal jitter": the n-th delay (n >= 1) is d/2 + jitter01 * d/2 where
// d = min(max, base * 2^(n-1)). jitter01 must lie in [0, 1); values outside are clamped.
Millis Backoff(int n, Millis base, Millis max, double jitter01);

// A failure that used up attempt `attempt` of `max_attempts` (a job's submission, a delivery's send):
// returns when to try again, or std::nullopt when none is left and the row fails for good. The retry
// is due at now + the server's Retry-After bounded to [0, retry_after_max] when it sent one, else at
// now + Backoff(attempt, backoff_base, backoff_max, jitter01). Decide and DecideDelivery both use it.
std::optional<TimePoint> RetryOrFail(int attempt, int max_attempts, std::optional<Millis> retry_after,
                                     TimePoint now, const Policy& policy, double jitter01);

// Decides what one outcome means for the job. `jitter01` in [0, 1) feeds Backoff.
Transition Decide(const JobContext& job, const Outcome& outcome, TimePoint now, const Policy& policy,
                  double jitter01);

}  // namespace uppzy
