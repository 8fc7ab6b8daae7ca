// Sites of the mock Uppzy server: which key each site takes (--site), the request budget of a site
// (--rate-limit, a token bucket) and the per-site request counts that /_mock/stats reports.
//
// A request passes the gate in this order (see MockApi::Handle for the rest):
//   1. With --site: a site that is not listed is 404 ("site not found"), whatever the key; a listed
//      site needs its own key, else 401. A path that names no site (not /m2m/sites/{site}/...) needs
//      one of the listed keys, else 401. Without --site: every site takes the one --api-key, else 401.
//   2. The site's token bucket, if --rate-limit names it: no token is 429 with Retry-After. A refused
//      request (401, 404 unknown site, 429) takes no token.
//
// Thread-safety: SiteGate is thread-safe; each site has its own mutex, held for a few arithmetic
// operations, so sites never wait on each other. TokenBucket and SecondCounts are plain values
// (thread-compatible); they take `now` as a parameter, so tests drive them with a fake clock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace uppzy::mock {

using SteadyTime = std::chrono::steady_clock::time_point;

// --site SITE=KEY.
struct SiteKey {
  std::string site;
  std::string key;
};

// --rate-limit SITE=N[/s][,BURST]: N requests per second on average, at most BURST at once.
struct RateLimit {
  double per_second = 0;  // > 0
  uint32_t burst = 0;     // >= 1; the default is N rounded up (at least 1)
};

// A site name: 1..128 characters of [A-Za-z0-9._~-] (one unescaped URL path segment).
bool ValidSiteName(std::string_view site);

// Parses "SITE=KEY" (KEY: 1..256 printable ASCII characters, no spaces). On a bad value returns
// std::nullopt and sets `*error` to a short reason (without the option name).
std::optional<SiteKey> ParseSiteKey(std::string_view text, std::string* error);

// Parses "SITE=N", "SITE=N/s", "SITE=N,BURST" or "SITE=N/s,BURST". N is a decimal number in
// (0, 1000000]; BURST an integer in [1, 1000000]. Same error convention as ParseSiteKey.
std::optional<std::pair<std::string, RateLimit>> ParseRateLimit(std::string_view text, std::string* error);

// A token bucket that starts full: `burst` tokens, refilled at `per_second`, never above `burst`.
class TokenBucket {
 public:
  explicit TokenBucket(RateLimit limit);

  // Takes one token at `now` and returns 0, or, if there is none, takes nothing and returns the
  // whole seconds (>= 1) after which one will be there: the Retry-After value. A `now` earlier than
  // the last call counts as the last call's time.
  int64_t TryTake(SteadyTime now);

  // Back to full, as at construction.
  void Refill();

 private:
  RateLimit limit_;
  double tokens_;
  std::optional<SteadyTime> last_;  // the time of the last TryTake; none: never called
};

// Counts per whole second since an origin, for the newest kSeconds seconds.
class SecondCounts {
 public:
  static constexpr int64_t kSeconds = 3600;

  // Counts one event in second `second` (>= 0). Seconds older than the newest kSeconds are dropped.
  void Add(int64_t second);

  // The first second of the window that ends at `current`: max(0, current - kSeconds + 1).
  static int64_t FirstOfWindow(int64_t current);

  // The counts of seconds FirstOfWindow(current) .. current (>= 0), in order. Seconds counted after
  // `current` are left out, as are seconds no longer among the newest kSeconds counted (they read 0).
  std::vector<uint32_t> Window(int64_t current) const;

  void Clear();

 private:
  std::vector<uint32_t> ring_;  // kSeconds slots once the first event is counted
  int64_t newest_ = -1;         // the newest second counted; -1: none
};

// The largest count and the 99th percentile (nearest rank) of a list of per-second counts; 0 and 0 for
// an empty list.
struct PerSecondSummary {
  uint32_t max = 0;
  uint32_t p99 = 0;
};
PerSecondSummary Summarize(std::vector<uint32_t> counts);

// What the gate decided.
struct Admission {
  enum class Verdict : uint8_t { kAdmitted, kUnauthorized, kUnknownSite, kRateLimited };
  Verdict verdict = Verdict::kAdmitted;
  int64_t retry_after_s = 0;  // kRateLimited only
};

class SiteGate {
 public:
  // `keys` empty: every site takes `default_key`. `limits` may name sites that `keys` does not list only
  // when `keys` is empty. `origin` is second 0 of the per-second counts.
  SiteGate(std::vector<SiteKey> keys, std::string default_key, std::map<std::string, RateLimit> limits,
           SteadyTime origin);
  ~SiteGate();

  // Checks one /api/v1 request for `site` ("" when the path names none) carrying `key` at `now`, and
  // counts it for its site.
  Admission Admit(std::string_view site, std::optional<std::string_view> key, SteadyTime now);

  // The "sites" object and the "sites_total" object of /_mock/stats as of `now` (see mock_server.h),
  // set into `*stats`.
  void AddStats(SteadyTime now, nlohmann::json* stats) const;

  // Clears every count and refills every bucket. The origin stays.
  void Reset();

  // Sites seen without --site or --rate-limit (only without --site) get their own counts up to this
  // many; the requests of further sites count only in sites_total.untracked.
  static constexpr size_t kMaxUnlistedSites = 64;

 private:
  struct Site;
  Site* Find(std::string_view site) const;
  Site* FindOrAdd(std::string_view site);

  const bool per_site_keys_;
  const std::string default_key_;
  const SteadyTime origin_;

  mutable std::shared_mutex table_mu_;
  std::map<std::string, std::unique_ptr<Site>, std::less<>> sites_;  // guarded by table_mu_; only grows
  std::atomic<uint64_t> unknown_site_{0};                            // 404: a site that --site does not list
  std::atomic<uint64_t> untracked_{0};               // admitted, of no site or of an untracked one
  std::atomic<uint64_t> untracked_unauthorized_{0};  // 401, of no site or of an untracked one
};

}  // namespace uppzy::mock
