// Job states, error kinds and the in-memory view of a claimed job.
//
// These names are a contract: they are the values stored in uppzy.chat_jobs.state and
// uppzy.chat_jobs.error_kind, which web apps and operators read with plain SQL.
// Everything here is a plain value type; thread-compatible (no shared state).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace uppzy {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;
using Millis = std::chrono::milliseconds;

enum class JobState { kQueued, kSubmitting, kPolling, kRetrying, kCompleted, kFailed, kCancelled };

// "queued", "submitting", ... exactly as stored in the table.
std::string_view ToString(JobState s);
// Returns nullopt for a string that is not one of the seven states.
std::optional<JobState> ParseJobState(std::string_view s);
// completed, failed and cancelled are terminal: finished_at is set exactly then.
bool IsTerminal(JobState s);

enum class ErrorKind {
  kNone,
  kRateLimited,      // 429
  kServerError,      // 5xx
  kNetwork,          // connect failure, reset, or one HTTP call timing out
  kPollTimeout,      // poll_deadline passed
  kUpstreamFailed,   // Uppzy reported status "failed"
  kBadRequest,       // 400, 404, 409, 413, 422 (and any other 4xx we do not know)
  kUnauthorized,     // 401: configuration incident
  kForbidden,        // 403: configuration incident
  kInvalidResponse,  // body could not be understood (or exceeded UPPZY_MAX_RESPONSE_BYTES)
  kLeaseExpired,     // a worker lost a submitting row's lease (crash-safety)
  kCancelled,        // an operator or the app cancelled an in-flight job
};

// "rate_limited", "server_error", ...; kNone is "".
std::string_view ToString(ErrorKind k);
std::optional<ErrorKind> ParseErrorKind(std::string_view s);

// What a worker holds in memory for one claimed row. Built from the claim (or adoption) query.
struct ClaimedJob {
  int64_t id = 0;
  std::string job_key;  // may be empty (NULL)
  std::string session_id;
  std::string message;  // never logged
  std::string response_language;
  JobState state = JobState::kSubmitting;  // kSubmitting after a claim, kPolling after an adoption
  int attempt = 0;                         // attempts after the claim: the number of this submission
  int max_attempts = 0;
  std::string request_id;  // set when adopted in kPolling
  TimePoint submitted_at{};
  TimePoint poll_deadline{};
  int polls = 0;
  TimePoint created_at{};  // the row's INSERT time (for the time-to-answer metric)
  std::string site_id;     // the row's Uppzy site; a NULL site_id reads as the claim's default site
};

}  // namespace uppzy
