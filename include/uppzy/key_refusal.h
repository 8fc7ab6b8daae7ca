// What to do when Uppzy refused the API key a request carried (401 or 403, or the worker had no key
// for the site), once the key ring has re-read its files: the pure decision behind "on a 401 it
// re-reads the key once before it opens an incident" (issue 10). Implemented in src/core.
//
// Pure: no I/O, no clock. Never throws.
#pragma once

#include <string_view>

namespace uppzy {

enum class KeyRefusalAction {
  kRetryWithNewKey,  // the site's key changed since the request was sent: send it again at once, uncharged
  kIncident,         // the key the site has now is the one refused (or none): open the incident
};

// `sent`: fingerprint of the key the refused request carried ("" when the site had none).
// `current`: fingerprint of the site's key after the re-read ("" when it has none now).
// `already_retried`: this attempt of the job (or delivery) was already sent again once for a new key;
// a second refusal opens the incident, so keys that flip back and forth never loop.
KeyRefusalAction DecideKeyRefusal(std::string_view sent, std::string_view current, bool already_retried);

}  // namespace uppzy
