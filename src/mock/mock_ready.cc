#include "mock/mock_ready.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "uppzy/json_text.h"

namespace uppzy::mock {
namespace {

// The standard normal quantile (P. J. Acklam's rational approximation, relative error below 1.2e-9).
// Exactly 0 at p = 0.5; -inf at p = 0 and +inf at p = 1.
double NormalQuantile(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01, -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  constexpr double kLow = 0.02425;
  if (p <= 0) return -HUGE_VAL;
  if (p >= 1) return HUGE_VAL;
  if (p < kLow || p > 1 - kLow) {
    double q = std::sqrt(-2 * std::log(p < kLow ? p : 1 - p));
    double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    return p < kLow ? x : -x;
  }
  double q = p - 0.5;
  double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

bool ParseNumber(std::string_view text, double* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size() && std::isfinite(*out);
}

bool ParseWhole(std::string_view text, int64_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

// "k=v,k=v" into a map; false (and `*error`) on a malformed or repeated pair.
bool ParseParams(std::string_view text, std::map<std::string, std::string_view, std::less<>>* out,
                 std::string* error) {
  while (true) {
    std::string_view pair = text.substr(0, text.find(','));
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      *error = "expected NAME=VALUE parameters separated by ',', got '" + std::string(pair) + "'";
      return false;
    }
    if (!out->emplace(std::string(pair.substr(0, eq)), pair.substr(eq + 1)).second) {
      *error = "parameter " + std::string(pair.substr(0, eq)) + " given twice";
      return false;
    }
    if (pair.size() == text.size()) return true;
    text.remove_prefix(pair.size() + 1);
  }
}

const char* OutcomeName(RequestRecord::Outcome outcome) {
  switch (outcome) {
    case RequestRecord::Outcome::kCompleted:
      return "completed";
    case RequestRecord::Outcome::kFailed:
      return "failed";
    case RequestRecord::Outcome::kNone:
      break;
  }
  return nullptr;
}

int64_t NearestRank(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

std::optional<ReadyDist> ParseReadyDist(std::string_view text, std::string* error) {
  size_t colon = text.find(':');
  std::string_view kind = text.substr(0, colon);
  std::map<std::string, std::string_view, std::less<>> params;
  if (colon == std::string_view::npos || !ParseParams(text.substr(colon + 1), &params, error)) {
    if (colon == std::string_view::npos) {
      *error = "expected lognormal:median_ms=M,sigma=S or uniform:min_ms=A,max_ms=B";
    }
    return std::nullopt;
  }
  auto take = [&](const char* name, std::string_view* value) {
    auto it = params.find(name);
    if (it == params.end()) {
      *error = std::string(kind) + " needs " + name;
      return false;
    }
    *value = it->second;
    params.erase(it);
    return true;
  };

  ReadyDist dist;
  std::string_view v1, v2;
  if (kind == "lognormal") {
    dist.kind = ReadyDist::Kind::kLognormal;
    if (!take("median_ms", &v1) || !take("sigma", &v2)) return std::nullopt;
    if (!ParseNumber(v1, &dist.median_ms) || dist.median_ms <= 0 || dist.median_ms > kMaxReadyMs) {
      *error = "median_ms must be a number in (0, 86400000]";
      return std::nullopt;
    }
    if (!ParseNumber(v2, &dist.sigma) || dist.sigma < 0 || dist.sigma > 5) {
      *error = "sigma must be a number in [0, 5]";
      return std::nullopt;
    }
  } else if (kind == "uniform") {
    dist.kind = ReadyDist::Kind::kUniform;
    if (!take("min_ms", &v1) || !take("max_ms", &v2)) return std::nullopt;
    if (!ParseWhole(v1, &dist.min_ms) || !ParseWhole(v2, &dist.max_ms) || dist.min_ms < 0 ||
        dist.max_ms < dist.min_ms || dist.max_ms > kMaxReadyMs) {
      *error = "min_ms and max_ms must be whole numbers with 0 <= min_ms <= max_ms <= 86400000";
      return std::nullopt;
    }
  } else {
    *error = "unknown distribution '" + std::string(kind) + "' (lognormal or uniform)";
    return std::nullopt;
  }
  if (!params.empty()) {
    *error = "unknown parameter " + params.begin()->first + " for " + std::string(kind);
    return std::nullopt;
  }
  return dist;
}

int64_t ReadyMsAt(const ReadyDist& dist, double u) {
  u = std::clamp(u, 0.0, 1.0);
  double ms = 0;
  switch (dist.kind) {
    case ReadyDist::Kind::kLognormal:
      ms = dist.median_ms * std::exp(dist.sigma * NormalQuantile(u));
      break;
    case ReadyDist::Kind::kUniform:
      // Width max - min + 1 so that every whole millisecond of [min, max] is as likely.
      ms = std::floor(static_cast<double>(dist.min_ms) +
                      u * static_cast<double>(dist.max_ms - dist.min_ms + 1));
      ms = std::min(ms, static_cast<double>(dist.max_ms));
      break;
  }
  if (!(ms >= 0)) return 0;  // also NaN (0 * inf)
  return static_cast<int64_t>(std::llround(std::min(ms, static_cast<double>(kMaxReadyMs))));
}

ReadySampler::ReadySampler(ReadyDist dist, uint64_t seed) : dist_(dist), rng_(seed) {}

int64_t ReadySampler::Next() {
  // 53 random bits, centred in their interval: u is never exactly 0 or 1.
  double u = (static_cast<double>(rng_() >> 11) + 0.5) * 0x1.0p-53;
  return ReadyMsAt(dist_, u);
}

RequestLog::RequestLog(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

uint64_t RequestLog::Add(RequestRecord record) {
  uint64_t handle = next_++;
  if (ring_.size() < capacity_) {
    ring_.push_back(std::move(record));
  } else {
    ring_[handle % capacity_] = std::move(record);
  }
  return handle;
}

RequestRecord* RequestLog::Find(uint64_t handle) {
  if (handle >= next_ || next_ - handle > capacity_) return nullptr;
  return &ring_[handle % capacity_];
}

std::vector<RequestRecord> RequestLog::Snapshot() const {
  std::vector<RequestRecord> out;
  out.reserve(ring_.size());
  uint64_t first = next_ - ring_.size();
  for (uint64_t h = first; h < next_; ++h) out.push_back(ring_[h % capacity_]);
  return out;
}

RequestLog::Completed RequestLog::CollectCompleted() const {
  Completed out;
  out.records = ring_.size();
  for (const RequestRecord& r : ring_) {
    if (r.outcome != RequestRecord::Outcome::kCompleted) continue;
    out.ready_to_seen_ms.push_back(std::max<int64_t>(0, r.first_seen_ms - r.ready_ms));
    out.status_calls += r.status_calls;
  }
  return out;
}

AnswerTimes RequestLog::Summarize(Completed completed) {
  AnswerTimes out;
  out.records = completed.records;
  std::vector<int64_t>& waits = completed.ready_to_seen_ms;
  out.completed = waits.size();
  if (waits.empty()) return out;
  std::sort(waits.begin(), waits.end());
  out.ready_to_seen_p50_ms = NearestRank(waits, 0.50);
  out.ready_to_seen_p95_ms = NearestRank(waits, 0.95);
  out.ready_to_seen_max_ms = waits.back();
  out.status_calls_per_completed =
      static_cast<double>(completed.status_calls) / static_cast<double>(waits.size());
  return out;
}

void RequestLog::Clear() {
  std::vector<RequestRecord>().swap(ring_);
  next_ = 0;
}

std::string RecordsJson(const std::vector<RequestRecord>& records) {
  // Written as text, a record at a time: 200,000 records as one nlohmann::json tree would take
  // hundreds of megabytes.
  std::string out = "[";
  for (const RequestRecord& r : records) {
    if (out.size() > 1) out += ',';
    nlohmann::json j{
        {"request_id", r.request_id}, {"site", r.site},           {"submitted_ms", r.submitted_ms},
        {"ready_ms", r.ready_ms},     {"first_seen_ms", nullptr}, {"status_calls", r.status_calls},
        {"outcome", nullptr}};
    if (r.first_seen_ms >= 0) j["first_seen_ms"] = r.first_seen_ms;
    if (const char* outcome = OutcomeName(r.outcome)) j["outcome"] = outcome;
    out += Dump(j);
  }
  out += ']';
  return out;
}

}  // namespace uppzy::mock
