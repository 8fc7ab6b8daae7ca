#include "uppzy/breaker.h"

namespace uppzy {

std::string_view ToString(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

bool CircuitBreaker::IsFailure(const Outcome& o) {
  return o.kind == OutcomeKind::kServerError || o.kind == OutcomeKind::kNetwork ||
         o.kind == OutcomeKind::kRateLimited;
}

bool CircuitBreaker::Tick(TimePoint now) {
  if (state_ == BreakerState::kOpen && now >= open_until_) {
    state_ = BreakerState::kHalfOpen;
    probe_in_flight_ = false;
    return true;
  }
  return false;
}

bool CircuitBreaker::AllowSubmit(TimePoint now) {
  Tick(now);
  switch (state_) {
    case BreakerState::kClosed:
      return true;
    case BreakerState::kOpen:
      return false;
    case BreakerState::kHalfOpen:
      if (probe_in_flight_) return false;
      probe_in_flight_ = true;
      return true;
  }
  return false;
}

bool CircuitBreaker::Record(const Outcome& o, bool was_probe, TimePoint now) {
  const BreakerState before = state_;
  if (IsFailure(o)) {
    ++consecutive_failures_;
    const bool probe_failed = state_ == BreakerState::kHalfOpen && was_probe;
    if ((state_ == BreakerState::kClosed && consecutive_failures_ >= policy_.failures) || probe_failed) {
      state_ = BreakerState::kOpen;
      open_until_ = now + policy_.cool_down;
      probe_in_flight_ = false;
    }
  } else if (o.kind != OutcomeKind::kUnauthorized && o.kind != OutcomeKind::kForbidden) {
    // Any other answer proves Uppzy is reachable and serving.
    consecutive_failures_ = 0;
    if (state_ == BreakerState::kHalfOpen) {
      state_ = BreakerState::kClosed;
      probe_in_flight_ = false;
    }
  }
  return state_ != before;
}

}  // namespace uppzy
