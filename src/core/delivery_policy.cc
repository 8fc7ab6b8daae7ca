#include "uppzy/delivery_policy.h"

#include <algorithm>
#include <chrono>
#include <string>

namespace uppzy {
namespace {

std::string Describe(const Outcome& o) {
  if (!o.error.empty()) return o.error;
  if (o.http_status != 0) return "HTTP " + std::to_string(o.http_status);
  return "no response";
}

DeliveryTransition Make(DeliveryAction action, TimePoint at, ErrorKind kind, int http_status,
                        std::string message) {
  DeliveryTransition t;
  t.action = action;
  t.at = at;
  t.error_kind = kind;
  t.http_status = http_status;
  t.message = std::move(message);
  return t;
}

// A failed send: again after a backoff while attempts remain, else failed for good.
DeliveryTransition RetryOrFail(const DeliveryContext& d, ErrorKind kind, int http_status, std::string message,
                               std::optional<Millis> retry_after, TimePoint now, const Policy& p,
                               double jitter) {
  if (d.attempt >= d.max_attempts)
    return Make(DeliveryAction::kFail, now, kind, http_status, std::move(message));
  const Millis delay = retry_after ? std::clamp(*retry_after, Millis(0), p.retry_after_max)
                                   : Backoff(d.attempt, p.backoff_base, p.backoff_max, jitter);
  return Make(DeliveryAction::kRetry, now + delay, kind, http_status, std::move(message));
}

}  // namespace

std::string_view ToString(DeliveryAction a) {
  switch (a) {
    case DeliveryAction::kDeliver:
      return "deliver";
    case DeliveryAction::kRetry:
      return "retry";
    case DeliveryAction::kFail:
      return "fail";
    case DeliveryAction::kIncident:
      return "incident";
  }
  return "unknown";
}

DeliveryTransition DecideDelivery(const DeliveryContext& d, const Outcome& o, TimePoint now, const Policy& p,
                                  double jitter01) {
  switch (o.kind) {
    case OutcomeKind::kUnauthorized:
    case OutcomeKind::kForbidden:
      // A configuration incident: never retried automatically and never charged to the row.
      return Make(DeliveryAction::kIncident, now, ErrorKindOf(o), o.http_status, Describe(o));
    case OutcomeKind::kDelivered: {
      DeliveryTransition t = Make(DeliveryAction::kDeliver, now, ErrorKind::kNone, o.http_status, {});
      if (d.kind == DeliveryKind::kFeedback && !o.feedback_submitted_at.empty()) {
        t.feedback_submitted_at = ParseIsoTimestamp(o.feedback_submitted_at);
      }
      return t;
    }
    case OutcomeKind::kBadRequest:
      if (d.kind == DeliveryKind::kSessionClose && o.http_status == 409) {
        // "Conflict or duplicate operation": the session is closed already, which is what we wanted.
        return Make(DeliveryAction::kDeliver, now, ErrorKind::kNone, o.http_status, "session already closed");
      }
      return Make(DeliveryAction::kFail, now, ErrorKind::kBadRequest, o.http_status, Describe(o));
    case OutcomeKind::kRateLimited:
    case OutcomeKind::kServerError:
    case OutcomeKind::kNetwork:
    case OutcomeKind::kInvalidResponse:
      return RetryOrFail(d, ErrorKindOf(o), o.http_status, Describe(o), o.retry_after, now, p, jitter01);
    case OutcomeKind::kAccepted:
    case OutcomeKind::kStatus:
      break;
  }
  return RetryOrFail(d, ErrorKind::kInvalidResponse, o.http_status, "unexpected response to a delivery",
                     std::nullopt, now, p, jitter01);
}

}  // namespace uppzy
