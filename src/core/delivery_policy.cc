#include "uppzy/delivery_policy.h"

#include <chrono>
#include <string>

namespace uppzy {
namespace {

DeliveryTransition Make(DeliveryAction action, TimePoint at, ErrorKind kind, int http_status,
                        std::string message) {
  return DeliveryTransition{.action = action,
                            .at = at,
                            .error_kind = kind,
                            .http_status = http_status,
                            .message = std::move(message),
                            .feedback_submitted_at = std::nullopt};
}

// A failed send: again after a backoff while attempts remain, else failed for good.
DeliveryTransition RetryOrFailDelivery(const DeliveryContext& d, ErrorKind kind, int http_status,
                                       std::string message, std::optional<Millis> retry_after, TimePoint now,
                                       const Policy& p, double jitter) {
  const auto at = RetryOrFail(d.attempt, d.max_attempts, retry_after, now, p, jitter);
  return Make(at ? DeliveryAction::kRetry : DeliveryAction::kFail, at.value_or(now), kind, http_status,
              std::move(message));
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
      return RetryOrFailDelivery(d, ErrorKindOf(o), o.http_status, Describe(o), o.retry_after, now, p,
                                 jitter01);
    case OutcomeKind::kAccepted:
    case OutcomeKind::kStatus:
      break;
  }
  return RetryOrFailDelivery(d, ErrorKind::kInvalidResponse, o.http_status,
                             "unexpected response to a delivery", std::nullopt, now, p, jitter01);
}

}  // namespace uppzy
