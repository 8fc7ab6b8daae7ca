#include "mock/mock_sites.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

namespace uppzy::mock {
namespace {

using nlohmann::json;

constexpr size_t kMaxSiteName = 128;
constexpr size_t kMaxKey = 256;
constexpr double kMaxRate = 1e6;
constexpr uint64_t kMaxBurst = 1000000;
// Refill arithmetic is in doubles: a token short by this much still counts as a whole one.
constexpr double kTokenSlack = 1e-9;

// Splits "SITE=REST" and checks SITE. Returns false and sets `*error` on a bad site.
bool SplitSite(std::string_view text, std::string_view* site, std::string_view* rest, std::string* error) {
  size_t eq = text.find('=');
  if (eq == std::string_view::npos) {
    *error = "expected SITE=..., got no '='";
    return false;
  }
  *site = text.substr(0, eq);
  *rest = text.substr(eq + 1);
  if (!ValidSiteName(*site)) {
    *error = "site must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -";
    return false;
  }
  return true;
}

int64_t SecondOf(SteadyTime now, SteadyTime origin) {
  if (now <= origin) return 0;
  return std::chrono::duration_cast<std::chrono::seconds>(now - origin).count();
}

}  // namespace

bool ValidSiteName(std::string_view site) {
  if (site.empty() || site.size() > kMaxSiteName) return false;
  return std::all_of(site.begin(), site.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '~' || c == '-';
  });
}

std::optional<SiteKey> ParseSiteKey(std::string_view text, std::string* error) {
  std::string_view site, key;
  if (!SplitSite(text, &site, &key, error)) return std::nullopt;
  bool printable = std::all_of(key.begin(), key.end(), [](char c) { return c > ' ' && c < 0x7f; });
  if (key.empty() || key.size() > kMaxKey || !printable) {
    *error = "key must be 1 to 256 printable ASCII characters without spaces";
    return std::nullopt;
  }
  return SiteKey{std::string(site), std::string(key)};
}

std::optional<std::pair<std::string, RateLimit>> ParseRateLimit(std::string_view text, std::string* error) {
  std::string_view site, rest;
  if (!SplitSite(text, &site, &rest, error)) return std::nullopt;
  std::string_view rate = rest.substr(0, rest.find(','));
  std::optional<std::string_view> burst;
  if (rate.size() < rest.size()) burst = rest.substr(rate.size() + 1);
  if (rate.ends_with("/s")) rate.remove_suffix(2);

  RateLimit limit;
  auto [end, ec] = std::from_chars(rate.data(), rate.data() + rate.size(), limit.per_second);
  if (rate.empty() || ec != std::errc() || end != rate.data() + rate.size() ||
      !std::isfinite(limit.per_second) || limit.per_second <= 0 || limit.per_second > kMaxRate) {
    *error = "rate must be a number of requests per second in (0, 1000000], as N or N/s";
    return std::nullopt;
  }
  if (burst) {
    uint64_t n = 0;
    auto [bend, bec] = std::from_chars(burst->data(), burst->data() + burst->size(), n);
    if (burst->empty() || bec != std::errc() || bend != burst->data() + burst->size() || n < 1 ||
        n > kMaxBurst) {
      *error = "burst must be a whole number in [1, 1000000]";
      return std::nullopt;
    }
    limit.burst = static_cast<uint32_t>(n);
  } else {
    limit.burst = static_cast<uint32_t>(std::max(1.0, std::ceil(limit.per_second)));
  }
  return std::make_pair(std::string(site), limit);
}

TokenBucket::TokenBucket(RateLimit limit) : limit_(limit), tokens_(limit.burst) {}

int64_t TokenBucket::TryTake(SteadyTime now) {
  if (!last_) {
    last_ = now;
  } else if (now > *last_) {
    double elapsed = std::chrono::duration<double>(now - *last_).count();
    tokens_ = std::min<double>(limit_.burst, tokens_ + elapsed * limit_.per_second);
    last_ = now;
  }
  if (tokens_ >= 1.0 - kTokenSlack) {
    tokens_ = std::max(0.0, tokens_ - 1.0);
    return 0;
  }
  double wait_s = (1.0 - tokens_) / limit_.per_second;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait_s - kTokenSlack)));
}

void TokenBucket::Refill() {
  tokens_ = limit_.burst;
  last_.reset();
}

void SecondCounts::Add(int64_t second) {
  if (second < 0 || second <= newest_ - kSeconds) return;  // too old for the window
  if (ring_.empty()) ring_.assign(kSeconds, 0);
  if (second > newest_) {
    // Zero the slots of the seconds between the newest counted and this one (at most the whole ring).
    int64_t from = std::max(newest_ + 1, second - kSeconds + 1);
    for (int64_t s = from; s <= second; ++s) ring_[s % kSeconds] = 0;
    newest_ = second;
  }
  uint32_t& slot = ring_[second % kSeconds];
  if (slot < UINT32_MAX) ++slot;
}

int64_t SecondCounts::FirstOfWindow(int64_t current) { return std::max<int64_t>(0, current - kSeconds + 1); }

std::vector<uint32_t> SecondCounts::Window(int64_t current) const {
  const int64_t first = FirstOfWindow(current);
  std::vector<uint32_t> out(static_cast<size_t>(std::max<int64_t>(0, current - first + 1)), 0);
  for (int64_t s = first; s <= current; ++s) {
    // A slot holds second `s` only if `s` is among the newest kSeconds counted.
    if (s <= newest_ && s > newest_ - kSeconds) out[static_cast<size_t>(s - first)] = ring_[s % kSeconds];
  }
  return out;
}

void SecondCounts::Clear() {
  ring_.clear();
  ring_.shrink_to_fit();
  newest_ = -1;
}

PerSecondSummary Summarize(std::vector<uint32_t> counts) {
  PerSecondSummary out;
  if (counts.empty()) return out;
  size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(counts.size())));
  size_t index = std::clamp<size_t>(rank, 1, counts.size()) - 1;
  std::nth_element(counts.begin(), counts.begin() + static_cast<std::ptrdiff_t>(index), counts.end());
  out.p99 = counts[index];
  out.max = *std::max_element(counts.begin(), counts.end());
  return out;
}

struct SiteGate::Site {
  std::string key;                 // with --site: the site's key; else unused
  std::optional<RateLimit> limit;  // --rate-limit

  std::mutex mu;
  std::optional<TokenBucket> bucket;  // guarded by mu; set iff limit is
  uint64_t requests = 0;              // guarded by mu; admitted
  uint64_t rate_limited = 0;          // guarded by mu
  uint64_t unauthorized = 0;          // guarded by mu
  SecondCounts admitted_per_second;   // guarded by mu
  SecondCounts limited_per_second;    // guarded by mu
};

SiteGate::SiteGate(std::vector<SiteKey> keys, std::string default_key,
                   std::map<std::string, RateLimit> limits, SteadyTime origin)
    : per_site_keys_(!keys.empty()), default_key_(std::move(default_key)), origin_(origin) {
  for (SiteKey& k : keys) {
    auto site = std::make_unique<Site>();
    site->key = std::move(k.key);
    sites_[std::move(k.site)] = std::move(site);
  }
  for (const auto& [name, limit] : limits) {
    auto it = sites_.find(name);
    if (it == sites_.end()) {
      if (per_site_keys_) continue;  // MockServer::Start() refuses this configuration
      it = sites_.emplace(name, std::make_unique<Site>()).first;
    }
    it->second->limit = limit;
    it->second->bucket.emplace(limit);
  }
}

SiteGate::~SiteGate() = default;

SiteGate::Site* SiteGate::Find(std::string_view name) const {
  std::shared_lock lock(table_mu_);
  auto it = sites_.find(name);
  return it == sites_.end() ? nullptr : it->second.get();
}

SiteGate::Site* SiteGate::FindOrAdd(std::string_view name) {
  if (Site* site = Find(name)) return site;
  std::unique_lock lock(table_mu_);
  auto it = sites_.find(name);
  if (it != sites_.end()) return it->second.get();
  if (sites_.size() >= kMaxUnlistedSites) return nullptr;
  return sites_.emplace(std::string(name), std::make_unique<Site>()).first->second.get();
}

Admission SiteGate::Admit(std::string_view name, std::optional<std::string_view> key, SteadyTime now) {
  using Verdict = Admission::Verdict;
  Site* site = nullptr;
  bool key_ok = false;
  if (per_site_keys_) {
    if (!name.empty()) {
      site = Find(name);
      if (site == nullptr) {
        unknown_site_.fetch_add(1, std::memory_order_relaxed);
        return {Verdict::kUnknownSite};
      }
      key_ok = key.has_value() && *key == site->key;  // site->key is const after construction
    } else if (key.has_value()) {
      std::shared_lock lock(table_mu_);
      key_ok =
          std::any_of(sites_.begin(), sites_.end(), [&](const auto& s) { return s.second->key == *key; });
    }
  } else {
    key_ok = key.has_value() && *key == default_key_;
    if (!name.empty()) site = FindOrAdd(name);
  }

  if (site == nullptr) {
    (key_ok ? untracked_ : untracked_unauthorized_).fetch_add(1, std::memory_order_relaxed);
    return {key_ok ? Verdict::kAdmitted : Verdict::kUnauthorized};
  }
  const int64_t second = SecondOf(now, origin_);
  std::lock_guard lock(site->mu);
  if (!key_ok) {
    ++site->unauthorized;
    return {Verdict::kUnauthorized};
  }
  if (site->bucket) {
    if (int64_t wait_s = site->bucket->TryTake(now); wait_s > 0) {
      ++site->rate_limited;
      site->limited_per_second.Add(second);
      return {Verdict::kRateLimited, wait_s};
    }
  }
  ++site->requests;
  site->admitted_per_second.Add(second);
  return {Verdict::kAdmitted};
}

void SiteGate::AddStats(SteadyTime now, json* stats) const {
  const int64_t current = SecondOf(now, origin_);
  json sites = json::object();
  uint64_t requests = 0, rate_limited = 0, unauthorized = 0;
  const int64_t first = SecondCounts::FirstOfWindow(current);
  std::vector<uint32_t> total_per_second(static_cast<size_t>(current - first + 1), 0);
  std::shared_lock table_lock(table_mu_);
  for (const auto& [name, site] : sites_) {
    json j;
    std::vector<uint32_t> admitted, limited;
    {
      std::lock_guard lock(site->mu);
      j["requests"] = site->requests;
      j["rate_limited"] = site->rate_limited;
      j["unauthorized"] = site->unauthorized;
      requests += site->requests;
      rate_limited += site->rate_limited;
      unauthorized += site->unauthorized;
      admitted = site->admitted_per_second.Window(current);
      limited = site->limited_per_second.Window(current);
    }
    if (site->limit) {
      j["rate_limit"] = json{{"per_second", site->limit->per_second}, {"burst", site->limit->burst}};
    } else {
      j["rate_limit"] = nullptr;
    }
    for (size_t i = 0; i < admitted.size(); ++i) total_per_second[i] += admitted[i];
    PerSecondSummary summary = Summarize(admitted);  // before the move below
    j["first_second"] = first;
    j["per_second"] = std::move(admitted);
    j["rate_limited_per_second"] = std::move(limited);
    j["max_per_second"] = summary.max;
    j["p99_per_second"] = summary.p99;
    sites[name] = std::move(j);
  }
  table_lock.unlock();

  PerSecondSummary summary = Summarize(total_per_second);
  (*stats)["sites"] = std::move(sites);
  (*stats)["sites_total"] = json{
      {"requests", requests},
      {"rate_limited", rate_limited},
      {"unauthorized", unauthorized + untracked_unauthorized_.load(std::memory_order_relaxed)},
      {"unknown_site", unknown_site_.load(std::memory_order_relaxed)},
      {"untracked", untracked_.load(std::memory_order_relaxed)},
      {"first_second", first},
      {"per_second", total_per_second},
      {"max_per_second", summary.max},
      {"p99_per_second", summary.p99},
  };
}

void SiteGate::Reset() {
  std::shared_lock table_lock(table_mu_);
  for (const auto& [name, site] : sites_) {
    std::lock_guard lock(site->mu);
    site->requests = site->rate_limited = site->unauthorized = 0;
    site->admitted_per_second.Clear();
    site->limited_per_second.Clear();
    if (site->bucket) site->bucket->Refill();
  }
  unknown_site_ = 0;
  untracked_ = 0;
  untracked_unauthorized_ = 0;
}

}  // namespace uppzy::mock
