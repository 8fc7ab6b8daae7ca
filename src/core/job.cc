#include "uppzy/job.h"

#include <array>
#include <utility>

namespace uppzy {
namespace {

constexpr std::array<std::pair<JobState, std::string_view>, 7> kStates{{
    {JobState::kQueued, "queued"},
    {JobState::kSubmitting, "submitting"},
    {JobState::kPolling, "polling"},
    {JobState::kRetrying, "retrying"},
    {JobState::kCompleted, "completed"},
    {JobState::kFailed, "failed"},
    {JobState::kCancelled, "cancelled"},
}};

constexpr std::array<std::pair<ErrorKind, std::string_view>, 12> kKinds{{
    {ErrorKind::kNone, ""},
    {ErrorKind::kRateLimited, "rate_limited"},
    {ErrorKind::kServerError, "server_error"},
    {ErrorKind::kNetwork, "network"},
    {ErrorKind::kPollTimeout, "poll_timeout"},
    {ErrorKind::kUpstreamFailed, "upstream_failed"},
    {ErrorKind::kBadRequest, "bad_request"},
    {ErrorKind::kUnauthorized, "unauthorized"},
    {ErrorKind::kForbidden, "forbidden"},
    {ErrorKind::kInvalidResponse, "invalid_response"},
    {ErrorKind::kLeaseExpired, "lease_expired"},
    {ErrorKind::kCancelled, "cancelled"},
}};

}  // namespace

std::string_view ToString(JobState s) {
  for (const auto& [state, name] : kStates) {
    if (state == s) return name;
  }
  return "unknown";
}

std::optional<JobState> ParseJobState(std::string_view s) {
  for (const auto& [state, name] : kStates) {
    if (name == s) return state;
  }
  return std::nullopt;
}

bool IsTerminal(JobState s) {
  return s == JobState::kCompleted || s == JobState::kFailed || s == JobState::kCancelled;
}

std::string_view ToString(ErrorKind k) {
  for (const auto& [kind, name] : kKinds) {
    if (kind == k) return name;
  }
  return "unknown";
}

std::optional<ErrorKind> ParseErrorKind(std::string_view s) {
  for (const auto& [kind, name] : kKinds) {
    if (name == s) return kind;
  }
  return std::nullopt;
}

}  // namespace uppzy
