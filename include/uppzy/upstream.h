// The Uppzy HTTP client: many concurrent exchanges on one thread, over libcurl multi.
//
// UppzyClient is NOT thread-safe: one thread (the engine's) calls everything except Wakeup(), which
// any thread may call. Nothing here throws after construction; every exchange ends in an Outcome.
// The constructor throws std::invalid_argument for a base URL it refuses (http:// to a host that is
// not loopback, or not http/https at all).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/outcome.h"

namespace uppzy {

struct UpstreamConfig {
  std::string base_url;  // e.g. https://api.uppzy.com/api/v1 (no trailing slash needed)
  std::string api_key;   // sent as X-API-Key; never logged
  long connect_timeout_ms = 3000;
  long total_timeout_ms = 10000;
  long max_response_bytes = 1048576;  // larger bodies are cut off: kInvalidResponse
  int max_connections = 16;           // per host; requests beyond are queued in order
  // PEM file of CA certificates that Uppzy's certificate must chain to (CURLOPT_CAINFO), e.g. a test CA
  // or a corporate proxy's. Empty: libcurl's default bundle. Certificate and host name checks are
  // always on; nothing here turns them off.
  std::string ca_file;
};

// What the client has seen of the network since it was built: for metrics and the sizing hint.
struct UpstreamStats {
  // Exchanges started and waiting in the client's queue: every connection (or, over HTTP/2, every
  // stream) is busy. Their timeout has not started.
  size_t waiting = 0;
  // Total time exchanges spent in that queue.
  double waited_seconds = 0;
  // Exchanges that got an HTTP answer, and their total time on the wire (from handing them to curl to
  // the last byte): the mean is the round trip plus Uppzy's own time.
  uint64_t answered = 0;
  double answered_seconds = 0;
  // True once an answer came over HTTP/2: exchanges are then multiplexed, kStreamsPerConnection per
  // connection. False over HTTP/1.1, where each connection carries one exchange at a time.
  bool multiplexing = false;
  // Exchanges handed to curl at once: max_connections, times the streams per connection when
  // multiplexing.
  size_t capacity = 0;
};

enum class RequestKind { kSubmit, kStatus, kFeedback, kSessionClose };

// "submit", "status", "feedback", "session_close": for logs and metrics labels.
std::string_view ToString(RequestKind k);

// Returns "" when UppzyClient would accept `base_url`, else a readable reason that names
// UPPZY_BASE_URL. Accepted: https://<any host>[:port][/path], and http:// only to a loopback host
// (127.0.0.0/8, [::1], localhost). No query, fragment or user info. Config validation may call it.
std::string CheckBaseUrl(const std::string& base_url);

struct Completion {
  uint64_t tag = 0;  // the caller's tag, as given to Start*
  RequestKind kind = RequestKind::kSubmit;
  Outcome outcome;
};

class UppzyClient {
 public:
  explicit UppzyClient(const UpstreamConfig& config);
  ~UppzyClient();
  UppzyClient(const UppzyClient&) = delete;
  UppzyClient& operator=(const UppzyClient&) = delete;

  // POST {base}/m2m/sites/{site}/chat/async with {session_id, message, response_language} and
  // Idempotency-Key: <job_id>-<attempt>.
  void StartSubmit(uint64_t tag, const std::string& site, int64_t job_id, int attempt,
                   const std::string& session_id, const std::string& message, const std::string& language);
  // GET {base}/m2m/sites/{site}/chat/requests/{request_id}
  void StartStatus(uint64_t tag, const std::string& site, const std::string& request_id);
  // POST {base}/m2m/sites/{site}/chat/feedback with {session_id, request_id, feedback}
  void StartFeedback(uint64_t tag, const std::string& site, const std::string& session_id,
                     const std::string& request_id, const std::string& feedback);
  // POST {base}/m2m/sites/{site}/chat/session/close with {session_id}
  void StartSessionClose(uint64_t tag, const std::string& site, const std::string& session_id);

  // Drives transfers: waits up to `max_wait_ms` for network activity or Wakeup(), then appends every
  // finished exchange to `out`. Returns the number appended.
  size_t Perform(long max_wait_ms, std::vector<Completion>* out);

  // Interrupts a Perform() that is waiting. Thread-safe.
  void Wakeup();

  // Exchanges started and not yet returned by Perform (queued ones included).
  size_t InFlight() const;

  // Counters and the current queue; cheap (no system call).
  UpstreamStats Stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

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
