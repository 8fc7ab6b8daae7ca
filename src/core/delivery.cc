#include "uppzy/delivery.h"

#include <array>
#include <utility>

namespace uppzy {
namespace {

constexpr std::array<std::pair<DeliveryKind, std::string_view>, 2> kKinds{{
    {DeliveryKind::kFeedback, "feedback"},
    {DeliveryKind::kSessionClose, "session_close"},
}};

constexpr std::array<std::pair<DeliveryState, std::string_view>, 5> kStates{{
    {DeliveryState::kQueued, "queued"},
    {DeliveryState::kSending, "sending"},
    {DeliveryState::kRetrying, "retrying"},
    {DeliveryState::kDelivered, "delivered"},
    {DeliveryState::kFailed, "failed"},
}};

}  // namespace

std::string_view ToString(DeliveryKind k) {
  for (const auto& [kind, name] : kKinds) {
    if (kind == k) return name;
  }
  return "unknown";
}

std::optional<DeliveryKind> ParseDeliveryKind(std::string_view s) {
  for (const auto& [kind, name] : kKinds) {
    if (name == s) return kind;
  }
  return std::nullopt;
}

std::string_view ToString(DeliveryState s) {
  for (const auto& [state, name] : kStates) {
    if (state == s) return name;
  }
  return "unknown";
}

std::optional<DeliveryState> ParseDeliveryState(std::string_view s) {
  for (const auto& [state, name] : kStates) {
    if (name == s) return state;
  }
  return std::nullopt;
}

bool IsTerminal(DeliveryState s) { return s == DeliveryState::kDelivered || s == DeliveryState::kFailed; }

}  // namespace uppzy
