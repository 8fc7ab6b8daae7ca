// Deliveries: the one-request calls the worker makes for the app besides chat jobs, namely a rating
// (uppzy.chat_feedback -> POST .../chat/feedback) and a session close (uppzy.session_closes -> POST
// .../chat/session/close). Kinds, states and the in-memory view of a claimed row.
//
// These names are a contract: they are the values stored in the tables' state column and the `kind`
// of the finish NOTIFY payload and of the view uppzy.deliveries. Plain value types; thread-compatible.
//
// A delivery's life: queued --claim (attempts + 1)--> sending --> delivered | retrying (run_at =
// backoff) | failed. 401/403 hand it back uncharged; a sending row whose lease runs out is rescued to
// retrying (or failed) with lease_expired. See migrations/0003_feedback.sql.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "uppzy/job.h"

namespace uppzy {

enum class DeliveryKind { kFeedback, kSessionClose };

// "feedback" or "session_close".
std::string_view ToString(DeliveryKind k);
std::optional<DeliveryKind> ParseDeliveryKind(std::string_view s);

enum class DeliveryState { kQueued, kSending, kRetrying, kDelivered, kFailed };

// "queued", "sending", "retrying", "delivered", "failed", exactly as stored.
std::string_view ToString(DeliveryState s);
std::optional<DeliveryState> ParseDeliveryState(std::string_view s);
// delivered and failed are terminal: finished_at is set exactly then.
bool IsTerminal(DeliveryState s);

// Identifies a delivery row: ids are per table, so a feedback and a close may share an id.
struct DeliveryRef {
  DeliveryKind kind = DeliveryKind::kFeedback;
  int64_t id = 0;
  auto operator<=>(const DeliveryRef&) const = default;
};

// What a worker holds in memory for one claimed delivery (state `sending`).
struct ClaimedDelivery {
  int64_t id = 0;
  DeliveryKind kind = DeliveryKind::kFeedback;
  std::string session_id;
  std::string request_id;  // kFeedback only (empty for a close)
  std::string feedback;    // kFeedback only: "good" or "bad", the value this send carries
  int attempt = 0;         // attempts after the claim: the number of this send, 1-based
  int max_attempts = 0;
  std::string site_id;  // the row's Uppzy site; a NULL site_id reads as the claim's default site

  DeliveryRef ref() const { return {kind, id}; }
};

}  // namespace uppzy
