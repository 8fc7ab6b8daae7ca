// The pure decisions of the shared request budget (issue 10; the bucket itself lives in PostgreSQL,
// migrations/0010_site_budgets.sql). Implemented in src/core.
//
// Pure: no I/O; time comes in as a parameter. Never throws. RateMeter is a plain value
// (thread-compatible).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace uppzy {

// How long a 429 from Uppzy blocks its site, for every worker: the server's Retry-After when it sent
// one, else a back-off that doubles with each 429 in a row (`in_a_row` >= 1: 1 s, 2 s, 4 s, ...).
// Always within [100 ms, 60 s]: a hostile Retry-After neither spins nor stalls the site for hours.
std::chrono::milliseconds RateLimitBlock(std::optional<std::chrono::milliseconds> retry_after, int in_a_row);

// How many new submissions a claim may take for a budgeted site, given the tokens just granted, the
// calls already waiting for a token (polls come first: finishing started work is worth more), and the
// in-flight slots granted (-1: no max_in_flight). Never negative.
int SubmissionsAllowed(int tokens, int calls_waiting, int slots);

// Requests per second over the last one to two seconds, counted in whole-second buckets.
class RateMeter {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  void Add(TimePoint now);
  double PerSecond(TimePoint now) const;

 private:
  int64_t second_ = INT64_MIN;  // the second of `current_`
  int current_ = 0;
  int previous_ = 0;  // the second before `second_`
};

}  // namespace uppzy
