// The decision for a delivery (rating or session close) given the outcome of its one HTTP exchange.
//
// Pure, like policy.h: no I/O, no clock, no randomness; `now` and the jitter are parameters. Never
// throws. The rules are the jobs' rules for a submission, with one request and no polling:
//   2xx (kDelivered)                   -> kDeliver (feedback_submitted_at kept when Uppzy sent it)
//   409 on a session close             -> kDeliver: the session is already closed, which is success
//   400/404/409/413/422, other 4xx     -> kFail / bad_request (a rating of an unknown or unfinished
//                                         request is a 404/409: Uppzy will not take it later either)
//   429, 5xx, network, invalid body    -> kRetry at now + backoff (a 429's Retry-After is honoured, up
//                                         to Policy::retry_after_max) while attempt < max_attempts,
//                                         else kFail with that error kind. Both calls are safe to
//                                         repeat: Uppzy acknowledges a second rating of a request.
//   401 / 403                          -> kIncident: hand the row back uncharged and pause, as for jobs
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "uppzy/delivery.h"
#include "uppzy/iso_time.h"  // ParseIsoTimestamp: how feedback_submitted_at is read
#include "uppzy/outcome.h"
#include "uppzy/policy.h"

namespace uppzy {

// What a decision needs to know about the delivery.
struct DeliveryContext {
  DeliveryKind kind = DeliveryKind::kFeedback;
  int attempt = 1;  // number of this send, 1-based (attempts after the claim)
  int max_attempts = 3;

  static DeliveryContext Of(const ClaimedDelivery& d) { return {d.kind, d.attempt, d.max_attempts}; }
};

enum class DeliveryAction {
  kDeliver,   // -> delivered
  kRetry,     // -> retrying with run_at = `at`; the error is appended to errors
  kFail,      // -> failed with error_kind
  kIncident,  // 401/403: open a configuration incident, hand the row back uncharged, pause Uppzy calls
};

struct DeliveryTransition {
  DeliveryAction action = DeliveryAction::kFail;
  TimePoint at{};  // kRetry: when to send again
  ErrorKind error_kind = ErrorKind::kNone;
  int http_status = 0;  // the answer's status (kDeliver: 200, or 409 for an already closed session)
  std::string message;  // readable reason; never contains a comment or a message text
  std::optional<TimePoint> feedback_submitted_at;  // kDeliver of a rating, when Uppzy sent a readable one
};

// "deliver", "retry", "fail", "incident": for logs.
std::string_view ToString(DeliveryAction a);

// Decides what one outcome means for the delivery. `jitter01` in [0, 1) feeds Backoff (policy.h).
DeliveryTransition DecideDelivery(const DeliveryContext& delivery, const Outcome& outcome, TimePoint now,
                                  const Policy& policy, double jitter01);

}  // namespace uppzy
