// What one finished HTTP exchange with Uppzy meant: the pure mapping from status, headers and body to
// an Outcome value. No I/O; `now` is a parameter. Never throws. Implemented in
// src/upstream/parse_exchange.cc; UppzyClient calls it for every exchange, and tests call it directly.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "uppzy/outcome.h"
#include "uppzy/upstream_client.h"

namespace uppzy {

// Pure mapping from one finished exchange to its Outcome; exposed for table tests.
// `curl_ok` is false when no HTTP response arrived (connect failure, reset, timeout): kNetwork.
// `truncated` is true when the body exceeded the limit: kInvalidResponse.
// `retry_after` is the raw Retry-After header value, or empty.
// Rules, in order: truncated -> kInvalidResponse; no response -> kNetwork (curl's message);
// 401 kUnauthorized, 403 kForbidden, 429 kRateLimited (+ retry_after from seconds or an HTTP-date
// relative to now_unix_seconds, never negative), 5xx kServerError, other 4xx kBadRequest, 1xx/3xx
// kInvalidResponse; their `error` is "HTTP <code>" plus ": <error>" when the body is JSON with a string
// `error`. 2xx: submit needs a JSON object with a non-empty string request_id (kAccepted); status needs
// a string `status` ("completed" needs a string `answer`; result_json holds the other fields except
// answer/status/request_id/session_id); feedback and session close are kDelivered (an empty body is
// fine, a non-empty one must be a JSON object). Anything else is kInvalidResponse. Every stored text
// but `answer` is cut to 300 bytes on a UTF-8 boundary; the request body never appears in `error`.
Outcome ParseExchange(RequestKind kind, bool curl_ok, const std::string& curl_error, long http_status,
                      const std::string& body, bool truncated, const std::string& retry_after,
                      long long now_unix_seconds);
// The same, with the limit that was applied, so a truncation says "response larger than N bytes", and
// the worker's API key, which is redacted from every text.
//
// Hostile input: every text that leaves here is safe to store and to log.
// - NUL (which PostgreSQL refuses in text and jsonb) and, in texts that are not refused, invalid UTF-8
//   bytes become U+FFFD, in the answer, error texts, status values and every key and string of result.
// - A 2xx body that is not valid UTF-8 is kInvalidResponse.
// - A request_id must be 1 to kMaxRequestIdBytes bytes of printable ASCII (no space, no control), and
//   not "." or "..", which curl would remove as dot segments: else kInvalidResponse.
// - A feedback_submitted_at that is not an ISO 8601 time between 1970 and 2200 is kInvalidResponse.
// - `secret` (when at least 8 bytes) is replaced by "[redacted]" wherever it appears.
Outcome ParseExchange(RequestKind kind, bool curl_ok, const std::string& curl_error, long http_status,
                      const std::string& body, bool truncated, const std::string& retry_after,
                      long long now_unix_seconds, long max_response_bytes, std::string_view secret);

// The longest request_id accepted from Uppzy.
inline constexpr size_t kMaxRequestIdBytes = 200;

}  // namespace uppzy
