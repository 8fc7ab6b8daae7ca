// A circuit breaker for submissions to Uppzy. Pure: every method takes `now`; no clock, no I/O.
//
// Closed: submissions flow. After `failures` consecutive failed calls (5xx, network, 429 — a 429 storm
// counts like an outage) it opens: no new submission for `cool_down`, so a long outage does not burn
// every queued job's attempts. Then it is half-open: one probe submission goes through; success closes
// it, failure opens it again. Polls of accepted requests are never blocked (they are bounded by their
// deadlines). Not thread-safe: the engine thread owns it.
#pragma once

#include "uppzy/job.h"
#include "uppzy/outcome.h"

namespace uppzy {

enum class BreakerState { kClosed = 0, kOpen = 1, kHalfOpen = 2 };
std::string_view ToString(BreakerState s);

struct BreakerPolicy {
  int failures = 10;        // UPPZY_BREAKER_FAILURES [1, 100000]: consecutive failures that open it
  Millis cool_down{30000};  // UPPZY_BREAKER_COOLDOWN_MS [100, 3600000]: how long it stays open
};

class CircuitBreaker {
 public:
  explicit CircuitBreaker(BreakerPolicy p = {}) : policy_(p) {}

  // May a new submission start now? In half-open, true for exactly one probe until it reports.
  // Moves open -> half-open when the cool-down has passed.
  bool AllowSubmit(TimePoint now);
  // Reports the outcome of any Uppzy call (submit or poll). Returns true when the state changed.
  bool Record(const Outcome& o, bool was_probe, TimePoint now);
  // Moves open -> half-open when due (without taking the probe). Returns true when the state changed.
  bool Tick(TimePoint now);

  BreakerState state() const { return state_; }
  TimePoint open_until() const { return open_until_; }
  // True for outcomes that count as Uppzy being unavailable.
  static bool IsFailure(const Outcome& o);

 private:
  BreakerPolicy policy_;
  BreakerState state_ = BreakerState::kClosed;
  int consecutive_failures_ = 0;
  bool probe_in_flight_ = false;
  TimePoint open_until_{};
};

}  // namespace uppzy
