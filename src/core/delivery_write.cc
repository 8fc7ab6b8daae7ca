#include "uppzy/delivery_write.h"

#include <utility>

namespace uppzy {
namespace {

DeliveryWrite Base(const ClaimedDelivery& d, DeliveryState new_state) {
  DeliveryWrite w;
  w.kind = d.kind;
  w.id = d.id;
  w.expected_attempt = d.attempt;
  w.new_state = new_state;
  w.sent_feedback = d.feedback;
  return w;
}

ErrorEntry EntryOf(const ClaimedDelivery& d, const DeliveryTransition& t, TimePoint now) {
  ErrorEntry e;
  e.attempt = d.attempt;
  e.at = now;
  e.kind = t.error_kind;
  e.http_status = t.http_status;
  e.message = t.message;
  e.request_id = d.request_id;
  return e;
}

}  // namespace

DeliveryWrite WriteDeliveryOutcome(const ClaimedDelivery& d, const DeliveryTransition& t, TimePoint now) {
  switch (t.action) {
    case DeliveryAction::kDeliver: {
      DeliveryWrite w = Base(d, DeliveryState::kDelivered);
      w.delivered_http_status = t.http_status;
      w.feedback_submitted_at = t.feedback_submitted_at;
      return w;
    }
    case DeliveryAction::kRetry: {
      DeliveryWrite w = Base(d, DeliveryState::kRetrying);
      w.run_at = t.at;
      w.error = EntryOf(d, t, now);
      return w;
    }
    case DeliveryAction::kIncident:
      return WriteDeliveryHandBack(d, EntryOf(d, t, now));
    case DeliveryAction::kFail:
      break;
  }
  DeliveryWrite w = Base(d, DeliveryState::kFailed);
  w.error = EntryOf(d, t, now);
  return w;
}

DeliveryWrite WriteDeliveryHandBack(const ClaimedDelivery& d, std::optional<ErrorEntry> error) {
  // Never sent, or refused before Uppzy did anything with it: the attempt is returned.
  DeliveryWrite w = Base(d, d.attempt - 1 > 0 ? DeliveryState::kRetrying : DeliveryState::kQueued);
  w.attempts_delta = -1;
  w.error = std::move(error);
  return w;
}

DeliveryWrite WriteDeliveryRejected(const DeliveryWrite& refused, const std::string& reason, TimePoint now) {
  DeliveryWrite w;
  w.kind = refused.kind;
  w.id = refused.id;
  w.expected_attempt = refused.expected_attempt;
  w.new_state = DeliveryState::kFailed;
  w.sent_feedback = refused.sent_feedback;
  w.error = RejectionEntry(refused.expected_attempt, reason, now);
  return w;
}

}  // namespace uppzy
