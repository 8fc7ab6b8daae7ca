// Runtime configuration of `uppzy-worker run`, read from the environment (flags may override).
//
// Every setting lists its environment variable, default and valid range. LoadConfig never throws and
// never stops at the first problem: it returns every problem at once, each naming its setting, so a
// broken deployment is fixed in one round. API keys are held here and in the KeyRing (key_ring.h) and
// nowhere else; they are never logged and never written to the database (only fingerprints are).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/breaker.h"
#include "uppzy/policy.h"

namespace uppzy {

// A key file larger than this is refused: it holds one key, and /dev/zero must not be read whole.
inline constexpr size_t kMaxKeyFileBytes = 4096;
// A CA file larger than this is refused (a full system bundle is about 200 KiB).
inline constexpr size_t kMaxCaFileBytes = 16 * 1024 * 1024;

// The default Uppzy site (jobs whose site_id is NULL) and its key at start-up. The keys of every site,
// re-read while the worker runs, are the KeyRing's (key_ring.h), built from Config::keys.
struct SiteConfig {
  std::string site_id;          // UPPZY_SITE_ID; with UPPZY_API_KEYS_DIR holding exactly one site and
                                // UPPZY_SITE_ID unset, that site
  std::string api_key;          // UPPZY_API_KEY, the contents of UPPZY_API_KEY_FILE, or the default
                                // site's file in UPPZY_API_KEYS_DIR
  std::string key_fingerprint;  // first 12 hex digits of SHA-256(api_key); safe to log and store
};

// Where the API keys come from: what KeyRing::Load reads (and Reload re-reads). Key files are refused
// above kMaxKeyFileBytes, empty, or with a control character inside the key (surrounding white space
// is trimmed).
struct KeySources {
  std::string default_site;  // UPPZY_SITE_ID, 1 to 128 letters, digits, '-', '_' or '.' (ValidSiteId);
                             // required unless keys_dir holds exactly one site
  std::string env_key;       // UPPZY_API_KEY, trimmed; "" when unset. Fixed for the life of the process
  std::string key_file;      // UPPZY_API_KEY_FILE: a file holding the default site's key; "" when unset.
                             // At most one of env_key and key_file
  // UPPZY_API_KEYS_DIR: a directory with one file per site, named by its site_id (ValidSiteId) and
  // holding its key, as a Kubernetes secret mounts; names starting with '.' are ignored, links are
  // followed. "" when unset. At least one of env_key, key_file and keys_dir is required, and a site
  // keyed by env_key or key_file must not have a file here too.
  std::string keys_dir;
};

struct Config {
  std::string database_url;                               // DATABASE_URL (required)
  std::string base_url = "https://api.uppzy.com/api/v1";  // UPPZY_BASE_URL; http:// only for loopback
  SiteConfig site;
  KeySources keys;                    // UPPZY_SITE_ID, UPPZY_API_KEY, UPPZY_API_KEY_FILE, UPPZY_API_KEYS_DIR
  Policy policy;                      // UPPZY_POLL_INTERVAL_MS [10, 600000], UPPZY_POLL_TIMEOUT_MS
                                      // [100, 3600000], UPPZY_BACKOFF_BASE_MS [1, 3600000],
                                      // UPPZY_BACKOFF_MAX_MS [base, 86400000],
                                      // UPPZY_RETRY_AFTER_MAX_MS [0, 86400000]
  int max_in_flight = 10000;          // UPPZY_MAX_IN_FLIGHT [1, 100000]: rows one worker holds
  int http_timeout_ms = 10000;        // UPPZY_HTTP_TIMEOUT_MS [100, 600000]: total time of one call
  int connect_timeout_ms = 3000;      // UPPZY_CONNECT_TIMEOUT_MS [10, 60000]
  int http_max_connections = 16;      // UPPZY_HTTP_MAX_CONNECTIONS [1, 1024]
  long max_response_bytes = 1048576;  // UPPZY_MAX_RESPONSE_BYTES [1024, 67108864]
  std::string worker_id;              // UPPZY_WORKER_ID; default <hostname>-<pid>
  std::string log_level = "info";     // UPPZY_LOG_LEVEL: trace, debug, info, warn, error
  std::string log_format = "text";    // UPPZY_LOG_FORMAT: text or json
  int lease_ms = 30000;               // UPPZY_LEASE_MS [1000, 3600000]
  int fetch_interval_ms = 1000;       // UPPZY_FETCH_INTERVAL_MS [10, 60000]: fallback when no NOTIFY
  int claim_batch = 500;              // UPPZY_CLAIM_BATCH [1, 10000]: most rows per claim statement
  int shutdown_grace_ms = 10000;      // UPPZY_SHUTDOWN_GRACE_MS [0, 600000]
  int rescue_interval_ms = 2000;      // UPPZY_RESCUE_INTERVAL_MS [100, 600000]
  // UPPZY_RESCUE_FULL_INTERVAL_MS [100, 3600000]: a rescue pass reads every held row of the fleet only
  // when a worker missed its heartbeat or started (uppzy.workers), and at least this often: the most a
  // row whose lease ran out without either (a live worker that could not renew it) waits.
  int rescue_full_interval_ms = 30000;
  // UPPZY_LISTEN_FALLBACK_MS [1000, 600000]: while LISTEN works and the worker holds nothing, the
  // fallback claim and the rescue pass run this often instead (new rows wake it through NOTIFY).
  int listen_fallback_ms = 30000;
  // UPPZY_WRITE_LINGER_MS [0, 1000]: the first of a few job writes waits this long for more before they
  // are stored together (a claim batch's worth is stored at once). Fewer, larger statements; 0: store
  // every pass's writes at once.
  int write_linger_ms = 20;
  // UPPZY_HTTP_ADDR: host:port of GET /healthz; "off" disables it, port 0 picks a free one.
  std::string http_addr = "127.0.0.1:9464";
  // Retention, run by every worker in the background in batches of 1000: finished rows older than
  // this are deleted. UPPZY_RETAIN_COMPLETED (default 7d), UPPZY_RETAIN_FAILED (30d),
  // UPPZY_RETAIN_CANCELLED (7d): a duration such as 90s, 30m, 12h or 7d (1s to 36500d), or "off"
  // (kept forever; 0 here).
  std::chrono::seconds retain_completed{7 * 86400};
  std::chrono::seconds retain_failed{30 * 86400};
  std::chrono::seconds retain_cancelled{7 * 86400};
  // UPPZY_STATS_INTERVAL_MS [100, 600000]: how often the database gauges of /metrics and the answer
  // of /readyz are refreshed (one cheap query on the worker's maintenance connection).
  int stats_interval_ms = 5000;
  // UPPZY_POLL_MODE: "adaptive" (the default) places polls by each site's answer times, learned from
  // its finished jobs (poll_schedule.h), with a mean ready-to-stored delay of UPPZY_POLL_TARGET_DELAY_MS
  // [100, 600000] (Policy::poll_target_delay; default 0.58 x the poll interval, 1,450 ms at 2,500 ms); it
  // is exactly the fixed tick until a site has 50 recent answers. "fixed" polls every
  // UPPZY_POLL_INTERVAL_MS (the vendor's playbook) always.
  std::string poll_mode = "adaptive";
  // UPPZY_SHARED_BUDGET: "on" (the default) makes every Uppzy call of a site with a limit in
  // uppzy.sites (requests_per_s, max_in_flight) or one learned from 429s take a token from the site's
  // bucket in PostgreSQL, shared by every worker (migrations/0010_site_budgets.sql); "off" sends as
  // fast as the work allows and backs off alone on 429s (what workers did before the budget).
  std::string shared_budget = "on";
  BreakerPolicy breaker;  // UPPZY_BREAKER_FAILURES [1, 100000], UPPZY_BREAKER_COOLDOWN_MS [100, 3600000]
  // UPPZY_CA_FILE: a PEM file of CA certificates Uppzy's certificate must chain to (a test CA, a
  // corporate TLS proxy's), in place of libcurl's default bundle file. Empty: the default. Must be a
  // readable file of at most kMaxCaFileBytes holding at least one certificate.
  std::string ca_file;
};

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment.
EnvLookup ProcessEnv();

struct ConfigResult {
  Config config;
  std::vector<std::string> problems;  // empty when config is usable; each names its setting
};

// Reads every setting through `env`. Reads UPPZY_API_KEY_FILE and UPPZY_API_KEYS_DIR from disk when
// set (through KeyRing::Load, whose problems it reports).
ConfigResult LoadConfig(const EnvLookup& env);

// Database-only settings (migrate, enqueue, operator commands need only DATABASE_URL).
ConfigResult LoadDatabaseConfig(const EnvLookup& env);

// First 12 hex digits of SHA-256(key).
std::string KeyFingerprint(std::string_view key);

// True for a valid site_id (UPPZY_SITE_ID, a file name in UPPZY_API_KEYS_DIR): 1 to 128 letters,
// digits, '-', '_' or '.', and not '.' or '..' (the rule of uppzy.sites, sites_site_id_valid).
bool ValidSiteId(std::string_view site_id);

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(std::string_view host);

}  // namespace uppzy
