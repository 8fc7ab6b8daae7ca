#include "uppzy/config.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "uppzy/duration.h"
#include "uppzy/key_ring.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

class Reader {
 public:
  Reader(const EnvLookup& env, std::vector<std::string>* problems) : env_(env), problems_(problems) {}

  std::optional<std::string> Raw(std::string_view name) const {
    auto v = env_(name);
    if (v && v->empty()) return std::nullopt;  // an empty variable counts as unset
    return v;
  }

  void String(std::string_view name, std::string* out, bool required) {
    if (auto v = Raw(name)) {
      *out = *v;
    } else if (required) {
      Problem(std::string(name) + " is required");
    }
  }

  template <typename Int>
  void Integer(std::string_view name, Int* out, long long lo, long long hi) {
    auto v = Raw(name);
    if (!v) return;
    long long parsed = 0;
    const char* b = v->data();
    const char* e = b + v->size();
    auto [ptr, ec] = std::from_chars(b, e, parsed);
    if (ec != std::errc() || ptr != e || parsed < lo || parsed > hi) {
      Problem(std::string(name) + " must be an integer from " + std::to_string(lo) + " to " +
              std::to_string(hi) + " (got '" + *v + "')");
      return;
    }
    *out = static_cast<Int>(parsed);
  }

  void Duration(std::string_view name, Millis* out, long long lo, long long hi) {
    long long ms = out->count();
    Integer(name, &ms, lo, hi);
    *out = Millis(ms);
  }

  void OneOf(std::string_view name, std::string* out, std::initializer_list<std::string_view> allowed) {
    auto v = Raw(name);
    if (!v) return;
    for (auto a : allowed) {
      if (*v == a) {
        *out = *v;
        return;
      }
    }
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    Problem(std::string(name) + " must be one of " + list + " (got '" + *v + "')");
  }

  void Problem(std::string p) { problems_->push_back(std::move(p)); }

 private:
  const EnvLookup& env_;
  std::vector<std::string>* problems_;
};

std::string DefaultWorkerId() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "worker");
  return std::string(host) + "-" + std::to_string(getpid());
}

// Host part of an http(s) URL, without brackets or port; empty if not found.
std::string HostOf(std::string_view url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {};
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    return close == std::string_view::npos ? std::string{} : std::string(rest.substr(1, close - 1));
  }
  return std::string(rest.substr(0, rest.find(':')));
}

void ValidateBaseUrl(Reader& r, const std::string& url, bool allow_insecure) {
  const bool https = url.rfind("https://", 0) == 0;
  const bool http = url.rfind("http://", 0) == 0;
  const std::string host = HostOf(url);
  if ((!https && !http) || host.empty()) {
    r.Problem("UPPZY_BASE_URL must be an http:// or https:// URL (got '" + url + "')");
  } else if (http && !IsLoopbackHost(host) && !allow_insecure) {
    r.Problem("UPPZY_BASE_URL must use https:// for a host that is not loopback (got '" + url +
              "'); plain http:// is accepted only for 127.0.0.1, ::1 and localhost");
  }
}

// "" when `path` is a readable regular file of at most kMaxCaFileBytes with a PEM certificate in it.
// Checked at start-up so that a wrong path is a configuration error, not every call failing later.
std::string CheckCaFile(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return "'" + path + "' does not exist";
  if (!std::filesystem::is_regular_file(status)) return "'" + path + "' is not a regular file";
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot read '" + path + "'";
  std::string text(kMaxCaFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxCaFileBytes) {
    return "'" + path + "' is larger than " + std::to_string(kMaxCaFileBytes) + " bytes";
  }
  if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return "'" + path + "' holds no PEM certificate (-----BEGIN CERTIFICATE-----)";
  }
  return {};
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::string KeyFingerprint(std::string_view key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 6 && i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

bool ValidSiteId(std::string_view s) {
  // '.' and '..' are no file names in UPPZY_API_KEYS_DIR (and sites_site_id_valid refuses them).
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

bool IsLoopbackHost(std::string_view host) {
  if (host == "localhost" || host == "::1") return true;
  if (host.rfind("127.", 0) != 0) return false;
  for (char c : host) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return true;
}

ConfigResult LoadDatabaseConfig(const EnvLookup& env) {
  ConfigResult result;
  Reader r(env, &result.problems);
  r.String("DATABASE_URL", &result.config.database_url, true);
  // A malformed URL can never connect: say so now instead of retrying it as an outage.
  if (!result.config.database_url.empty()) {
    if (std::string problem = CheckDatabaseUrl(result.config.database_url); !problem.empty()) {
      r.Problem("DATABASE_URL: " + problem);
    }
  }
  return result;
}

ConfigResult LoadConfig(const EnvLookup& env) {
  ConfigResult result = LoadDatabaseConfig(env);
  Config& c = result.config;
  Reader r(env, &result.problems);

  r.String("UPPZY_BASE_URL", &c.base_url, false);
  while (!c.base_url.empty() && c.base_url.back() == '/') c.base_url.pop_back();
  ValidateBaseUrl(r, c.base_url, r.Raw("UPPZY_ALLOW_INSECURE_HTTP").value_or("") == "1");

  // The sites and their keys: the KeyRing reads and checks them (and the worker re-reads them).
  r.String("UPPZY_SITE_ID", &c.keys.default_site, false);
  r.String("UPPZY_API_KEY", &c.keys.env_key, false);
  r.String("UPPZY_API_KEY_FILE", &c.keys.key_file, false);
  r.String("UPPZY_API_KEYS_DIR", &c.keys.keys_dir, false);
  KeyRingResult keys = KeyRing::Load(c.keys);
  for (auto& p : keys.problems) r.Problem(std::move(p));
  if (keys.ring) {
    c.site.site_id = keys.ring->DefaultSite();
    if (auto key = keys.ring->Get(c.site.site_id)) {
      c.site.api_key = key->key;
      c.site.key_fingerprint = key->fingerprint;
    }
  }

  r.Duration("UPPZY_POLL_INTERVAL_MS", &c.policy.poll_interval, 10, 600000);
  r.Duration("UPPZY_POLL_TIMEOUT_MS", &c.policy.poll_timeout, 100, 3600000);
  r.Duration("UPPZY_BACKOFF_BASE_MS", &c.policy.backoff_base, 1, 3600000);
  r.Duration("UPPZY_BACKOFF_MAX_MS", &c.policy.backoff_max, 1, 86400000);
  r.Duration("UPPZY_RETRY_AFTER_MAX_MS", &c.policy.retry_after_max, 0, 86400000);
  if (c.policy.backoff_max < c.policy.backoff_base) {
    r.Problem("UPPZY_BACKOFF_MAX_MS (" + std::to_string(c.policy.backoff_max.count()) +
              ") must be at least UPPZY_BACKOFF_BASE_MS (" + std::to_string(c.policy.backoff_base.count()) +
              ")");
  }
  r.Integer("UPPZY_MAX_IN_FLIGHT", &c.max_in_flight, 1, 100000);
  r.Integer("UPPZY_HTTP_TIMEOUT_MS", &c.http_timeout_ms, 100, 600000);
  r.Integer("UPPZY_CONNECT_TIMEOUT_MS", &c.connect_timeout_ms, 10, 60000);
  r.Integer("UPPZY_HTTP_MAX_CONNECTIONS", &c.http_max_connections, 1, 1024);
  if (auto ca_file = r.Raw("UPPZY_CA_FILE"); ca_file && !ca_file->empty()) {
    c.ca_file = *ca_file;
    if (std::string problem = CheckCaFile(*ca_file); !problem.empty()) r.Problem("UPPZY_CA_FILE: " + problem);
  }
  r.Integer("UPPZY_MAX_RESPONSE_BYTES", &c.max_response_bytes, 1024, 67108864);
  r.Integer("UPPZY_LEASE_MS", &c.lease_ms, 1000, 3600000);
  r.Integer("UPPZY_FETCH_INTERVAL_MS", &c.fetch_interval_ms, 10, 60000);
  r.Integer("UPPZY_CLAIM_BATCH", &c.claim_batch, 1, 10000);
  r.Integer("UPPZY_SHUTDOWN_GRACE_MS", &c.shutdown_grace_ms, 0, 600000);
  r.Integer("UPPZY_RESCUE_INTERVAL_MS", &c.rescue_interval_ms, 100, 600000);
  r.Integer("UPPZY_RESCUE_FULL_INTERVAL_MS", &c.rescue_full_interval_ms, 100, 3600000);
  r.Integer("UPPZY_LISTEN_FALLBACK_MS", &c.listen_fallback_ms, 1000, 600000);
  r.Integer("UPPZY_WRITE_LINGER_MS", &c.write_linger_ms, 0, 1000);

  r.Integer("UPPZY_BREAKER_FAILURES", &c.breaker.failures, 1, 100000);
  r.Duration("UPPZY_BREAKER_COOLDOWN_MS", &c.breaker.cool_down, 100, 3600000);
  r.String("UPPZY_HTTP_ADDR", &c.http_addr, false);
  if (c.http_addr != "off") {
    auto colon = c.http_addr.rfind(':');
    int port = -1;
    if (colon != std::string::npos && colon > 0) {
      auto [ptr, ec] =
          std::from_chars(c.http_addr.data() + colon + 1, c.http_addr.data() + c.http_addr.size(), port);
      if (ec != std::errc() || ptr != c.http_addr.data() + c.http_addr.size()) port = -1;
    }
    if (port < 0 || port > 65535) {
      r.Problem("UPPZY_HTTP_ADDR must be host:port, e.g. 127.0.0.1:9464, or off (got '" + c.http_addr + "')");
    }
  }

  for (auto [name, field] : {std::pair{"UPPZY_RETAIN_COMPLETED", &c.retain_completed},
                             std::pair{"UPPZY_RETAIN_FAILED", &c.retain_failed},
                             std::pair{"UPPZY_RETAIN_CANCELLED", &c.retain_cancelled}}) {
    auto v = r.Raw(name);
    if (!v) continue;
    if (*v == "off") {
      *field = std::chrono::seconds(0);
    } else if (auto d = ParseDuration(*v)) {
      *field = *d;
    } else {
      r.Problem(std::string(name) + " must be a duration such as 90s, 30m, 12h or 7d, or off (got '" + *v +
                "')");
    }
  }
  r.Integer("UPPZY_STATS_INTERVAL_MS", &c.stats_interval_ms, 100, 600000);
  r.OneOf("UPPZY_POLL_MODE", &c.poll_mode, {"fixed", "adaptive"});
  r.OneOf("UPPZY_SHARED_BUDGET", &c.shared_budget, {"on", "off"});
  r.Duration("UPPZY_POLL_TARGET_DELAY_MS", &c.policy.poll_target_delay, 100, 600000);

  c.worker_id = DefaultWorkerId();
  r.String("UPPZY_WORKER_ID", &c.worker_id, false);
  if (c.worker_id.size() > 200) r.Problem("UPPZY_WORKER_ID must be at most 200 characters");
  r.OneOf("UPPZY_LOG_LEVEL", &c.log_level, {"trace", "debug", "info", "warn", "error"});
  r.OneOf("UPPZY_LOG_FORMAT", &c.log_format, {"text", "json"});
  return result;
}

}  // namespace uppzy
