// The Uppzy HTTP client: many concurrent exchanges on one thread, over libcurl multi. The real
// UpstreamClient (upstream_client.h); what one exchange meant is ParseExchange's (parse_exchange.h).
//
// UppzyClient is NOT thread-safe: one thread (the engine's) calls everything except Wakeup(), which
// any thread may call. Nothing here throws after construction; every exchange ends in an Outcome.
// The constructor throws std::invalid_argument for a base URL it refuses (http:// to a host that is
// not loopback, or not http/https at all) and for an `api_key` holding a line break or NUL.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/outcome.h"
#include "uppzy/upstream_client.h"

namespace uppzy {

// The API key of a site, or nullopt when this worker holds none. Called on the client's thread each
// time an exchange is started (Start*), so a rotated key is used from the next exchange on; it must be
// safe against a concurrent reload (KeyRing::Get is).
using KeyLookup = std::function<std::optional<std::string>(const std::string& site)>;

struct UpstreamConfig {
  std::string base_url;  // e.g. https://api.uppzy.com/api/v1 (no trailing slash needed)
  // X-API-Key of every exchange: the key `key_lookup` gives for the exchange's site. A site without a
  // key (or whose key holds a line break or NUL) ends at once, nothing sent, as kUnauthorized with
  // http_status 0: a configuration incident, never retried on its own. Without a lookup, `api_key`
  // serves every site. Never logged; redacted from every text of the exchange (ParseExchange).
  KeyLookup key_lookup;
  std::string api_key;
  long connect_timeout_ms = 3000;
  long total_timeout_ms = 10000;
  long max_response_bytes = 1048576;  // larger bodies are cut off: kInvalidResponse
  int max_connections = 16;           // per host; requests beyond are queued in order
  // PEM file of CA certificates that Uppzy's certificate must chain to (CURLOPT_CAINFO), e.g. a test CA
  // or a corporate proxy's. Empty: libcurl's default bundle. Certificate and host name checks are
  // always on; nothing here turns them off.
  std::string ca_file;
};

// Returns "" when UppzyClient would accept `base_url`, else a readable reason that names
// UPPZY_BASE_URL. Accepted: https://<any host>[:port][/path], and http:// only to a loopback host
// (127.0.0.0/8, [::1], localhost). No query, fragment or user info. Config validation may call it.
std::string CheckBaseUrl(const std::string& base_url);

class UppzyClient final : public UpstreamClient {
 public:
  explicit UppzyClient(const UpstreamConfig& config);
  ~UppzyClient() override;
  UppzyClient(const UppzyClient&) = delete;
  UppzyClient& operator=(const UppzyClient&) = delete;

  // POST {base}/m2m/sites/{site}/chat/async with {session_id, message, response_language} and
  // Idempotency-Key: <job_id>-<attempt>.
  void StartSubmit(uint64_t tag, const std::string& site, int64_t job_id, int attempt,
                   const std::string& session_id, const std::string& message,
                   const std::string& language) override;
  // GET {base}/m2m/sites/{site}/chat/requests/{request_id}
  void StartStatus(uint64_t tag, const std::string& site, const std::string& request_id) override;
  // POST {base}/m2m/sites/{site}/chat/feedback with {session_id, request_id, feedback}
  void StartFeedback(uint64_t tag, const std::string& site, const std::string& session_id,
                     const std::string& request_id, const std::string& feedback) override;
  // POST {base}/m2m/sites/{site}/chat/session/close with {session_id}
  void StartSessionClose(uint64_t tag, const std::string& site, const std::string& session_id) override;

  // Drives transfers: waits up to `max_wait_ms` for network activity or Wakeup(), then appends every
  // finished exchange to `out`. Returns the number appended.
  size_t Perform(long max_wait_ms, std::vector<Completion>* out) override;

  // Interrupts a Perform() that is waiting. Thread-safe.
  void Wakeup() override;

  // Exchanges started and not yet returned by Perform (queued ones included).
  size_t InFlight() const override;
  UpstreamStats Stats() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
