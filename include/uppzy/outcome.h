// What one HTTP exchange with Uppzy meant. The upstream client turns every exchange into an
// Outcome value, never an exception: a 429 or a timeout is data. Plain value type.
#pragma once

#include <optional>
#include <string>

#include "uppzy/job.h"

namespace uppzy {

enum class OutcomeKind {
  kAccepted,         // submit: 2xx carrying a request_id
  kStatus,           // status: 2xx with a readable status (see Outcome::status)
  kDelivered,        // feedback / session close: 2xx
  kRateLimited,      // 429 (retry_after when the server sent Retry-After)
  kServerError,      // 5xx
  kNetwork,          // no HTTP response: connect failure, reset, timeout
  kBadRequest,       // 400, 404, 409, 413, 422 and any other unexpected 4xx
  kUnauthorized,     // 401, or no API key for the site (http_status 0, nothing sent)
  kForbidden,        // 403
  kInvalidResponse,  // a body that could not be understood, or larger than the limit
};

struct Outcome {
  OutcomeKind kind = OutcomeKind::kNetwork;
  int http_status = 0;      // 0 when no HTTP response arrived
  std::string request_id;   // kAccepted; kStatus echoes it when present
  std::string status;       // kStatus: "completed", "failed", or any in-progress value
  std::string answer;       // kStatus + completed: never logged
  std::string result_json;  // kStatus + completed: the other fields of the response, a JSON object
  std::string error;        // kStatus + failed: Uppzy's error text; otherwise a short readable detail
  std::optional<Millis> retry_after;  // kRateLimited, or kStatus still in progress, with a Retry-After header
  std::string feedback_submitted_at;  // kDelivered for feedback, when present
  Millis duration{0};                 // wall time of the exchange

  static Outcome Accepted(std::string request_id, int http_status = 202);
  static Outcome Status(std::string status, std::string answer = {}, std::string error = {});
  static Outcome Of(OutcomeKind kind, int http_status = 0, std::string error = {});
};

// The error kind an outcome stands for (kNone for kAccepted / kStatus / kDelivered).
ErrorKind ErrorKindOf(const Outcome& o);

// What an exchange said, for last_error and logs (jobs and deliveries alike): `error` when the client
// left a detail, else "HTTP <status>", else "no response". Never a message, comment or answer text.
std::string Describe(const Outcome& o);

}  // namespace uppzy
