#include "uppzy/key_refusal.h"

namespace uppzy {

KeyRefusalAction DecideKeyRefusal(std::string_view sent, std::string_view current, bool already_retried) {
  if (already_retried || current.empty() || current == sent) return KeyRefusalAction::kIncident;
  return KeyRefusalAction::kRetryWithNewKey;
}

}  // namespace uppzy
