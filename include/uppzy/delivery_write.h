// A change to one claimed delivery row, as a value. The runtime builds it from a DeliveryTransition
// with the named builders below; DeliveryStore::DeliveriesApplyWrites applies many in one guarded
// statement per table. Pure; never throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "uppzy/delivery.h"
#include "uppzy/delivery_policy.h"
#include "uppzy/job_write.h"

namespace uppzy {

struct DeliveryWrite {
  DeliveryKind kind = DeliveryKind::kFeedback;
  int64_t id = 0;
  // Fencing: the write applies only if the row is still `sending`, at this attempt, held by us.
  int expected_attempt = 0;

  DeliveryState new_state = DeliveryState::kDelivered;
  int attempts_delta = 0;                          // -1: a claimed send handed back uncharged
  std::optional<TimePoint> run_at;                 // kRetrying: when to send again (unchanged when absent)
  std::string sent_feedback;                       // kFeedback: the rating this send carried (see below)
  int delivered_http_status = 0;                   // kDelivered: the answer's status (0 is stored as null)
  std::optional<TimePoint> feedback_submitted_at;  // kDelivered rating: Uppzy's acknowledgement time
  std::optional<ErrorEntry> error;  // sets error_kind, last_error, last_http_status; appended to errors

  DeliveryRef ref() const { return {kind, id}; }
};

// Builds the write for a kDeliver, kRetry or kFail transition (delivered; retrying with run_at = t.at;
// failed), appending the error for kRetry / kFail. For kIncident it is WriteDeliveryHandBack with the
// 401/403 recorded as an event. If the rating was changed (uppzy.rate_job) while this send was in
// flight, the store turns a delivered or failed write into a fresh `queued` row, so the new rating is
// sent too; that is why the write carries `sent_feedback`.
DeliveryWrite WriteDeliveryOutcome(const ClaimedDelivery& d, const DeliveryTransition& t, TimePoint now);

// Hands the row back without charging anything (a 401/403 incident, or shutdown before the request was
// sent): sending -> queued (first attempt) or retrying, with the attempt returned and run_at unchanged,
// so it is claimable at once (once the incident is resolved). `error`, if given, is recorded as an event.
DeliveryWrite WriteDeliveryHandBack(const ClaimedDelivery& d, std::optional<ErrorEntry> error);

// Replaces a write the database refused for good (see WriteRejected in job_write.h): the row fails,
// under the same guard, with error_kind invalid_response and `reason` in last_error.
DeliveryWrite WriteDeliveryRejected(const DeliveryWrite& refused, const std::string& reason, TimePoint now);

}  // namespace uppzy
