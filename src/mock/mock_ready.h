// Answer times of the mock Uppzy server: how long a request takes from submission to "completed"
// (--ready-dist, drawn per request), and the record of when each answer became ready and when the
// client first saw it (GET /_mock/requests and the "answers" object of /_mock/stats).
//
// Thread-safety: everything here is thread-compatible; MockApi guards its ReadySampler and RequestLog
// with its own mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace uppzy::mock {

// No drawn answer time exceeds one day.
inline constexpr int64_t kMaxReadyMs = 24ll * 3600 * 1000;

// --ready-dist: the distribution of a request's answer time, in milliseconds.
struct ReadyDist {
  enum class Kind : uint8_t {
    kLognormal,  // median_ms * exp(sigma * Z), Z standard normal
    kUniform,    // every whole millisecond in [min_ms, max_ms] equally likely
  };
  Kind kind = Kind::kUniform;
  double median_ms = 0;  // lognormal: (0, kMaxReadyMs]
  double sigma = 0;      // lognormal: [0, 5]; 0 is always the median
  int64_t min_ms = 0;    // uniform: 0 <= min_ms <= max_ms <= kMaxReadyMs
  int64_t max_ms = 0;
};

// Parses "lognormal:median_ms=M,sigma=S" or "uniform:min_ms=A,max_ms=B" (each parameter exactly once,
// in any order). On a bad spec returns std::nullopt and sets `*error` to a short reason (without the
// option name).
std::optional<ReadyDist> ParseReadyDist(std::string_view text, std::string* error);

// The answer time at quantile `u` of `dist` (the inverse of its distribution function), rounded to
// whole milliseconds and clamped to [0, kMaxReadyMs]. `u` is clamped to [0, 1]. Pure.
//   lognormal: u = 0.5 gives median_ms, u = 0.8413 gives about median_ms * e^sigma;
//   uniform:   u = 0 gives min_ms, u -> 1 gives max_ms.
int64_t ReadyMsAt(const ReadyDist& dist, double u);

// Draws answer times from `dist` with a generator seeded by `seed`: the same seed gives the same
// sequence on every machine (std::mt19937_64 is fully specified by the standard, and the quantile is
// computed here rather than by a standard library distribution, whose algorithm is not).
class ReadySampler {
 public:
  ReadySampler(ReadyDist dist, uint64_t seed);
  int64_t Next();

 private:
  ReadyDist dist_;
  std::mt19937_64 rng_;
};

// One accepted request, for GET /_mock/requests. Times are milliseconds of the mock's steady clock
// since it started.
struct RequestRecord {
  enum class Outcome : uint8_t { kNone, kCompleted, kFailed };
  std::string request_id;
  std::string site;
  int64_t submitted_ms = 0;
  int64_t ready_ms = 0;              // see MockApi: scheduled ready time, or the poll that forced the end
  int64_t first_seen_ms = -1;        // the first status call that returned completed (or failed); -1: none
  uint32_t status_calls = 0;         // status calls that found this request, whatever they answered
  Outcome outcome = Outcome::kNone;  // what the first_seen call returned
};

// Aggregates over the records held, for /_mock/stats.
struct AnswerTimes {
  uint64_t records = 0;              // records held (at most the capacity)
  uint64_t completed = 0;            // of them, seen completed
  int64_t ready_to_seen_p50_ms = 0;  // first_seen_ms - ready_ms over the completed ones (nearest rank)
  int64_t ready_to_seen_p95_ms = 0;
  int64_t ready_to_seen_max_ms = 0;
  double status_calls_per_completed = 0;  // mean status_calls of the completed ones
};

// The newest `capacity` request records, in a ring: memory stays bounded however long the mock runs.
class RequestLog {
 public:
  static constexpr size_t kDefaultCapacity = 200000;
  explicit RequestLog(size_t capacity = kDefaultCapacity);

  // Stores a record, evicting the oldest if full; returns its handle.
  uint64_t Add(RequestRecord record);
  // The record of `handle`, or nullptr once it has been evicted.
  RequestRecord* Find(uint64_t handle);

  // Every record held, oldest first.
  std::vector<RequestRecord> Snapshot() const;

  // What AnswerTimes is computed from: one pass, no sorting (cheap enough to run under a lock).
  struct Completed {
    uint64_t records = 0;
    std::vector<int64_t> ready_to_seen_ms;  // of each completed record
    uint64_t status_calls = 0;              // summed over the completed records
  };
  Completed CollectCompleted() const;
  static AnswerTimes Summarize(Completed completed);
  void Clear();

 private:
  size_t capacity_;
  std::vector<RequestRecord> ring_;  // record `handle` at ring_[handle % capacity_]
  uint64_t next_ = 0;                // the handle of the next record
};

// The JSON array of GET /_mock/requests: [{"request_id","site","submitted_ms","ready_ms",
// "first_seen_ms" (null if not yet seen),"status_calls","outcome" ("completed"|"failed"|null)}, ...].
std::string RecordsJson(const std::vector<RequestRecord>& records);

}  // namespace uppzy::mock
