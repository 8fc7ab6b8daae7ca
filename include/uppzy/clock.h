// Where the runtime reads the time: the seam that lets a test hold the clock still or move it on.
//
// ClockSource is an interface with two clocks: the wall clock (TimePoint, system_clock), which the pure
// decisions take as `now` and which rows store, and the steady clock, which the runtime loops use for
// their timers and deadlines (it never jumps with NTP). The engine and the coordinator read time only
// through the ClockSource they are given. (The name is not `Clock`: that is the system_clock alias in
// job.h, which the pure code and the stores keep using.)
//
// Implementations must be thread-safe: Now() and SteadyNow() may be called from any thread. Neither
// throws.
#pragma once

#include <chrono>

#include "uppzy/job.h"

namespace uppzy {

using SteadyTimePoint = std::chrono::steady_clock::time_point;

class ClockSource {
 public:
  virtual ~ClockSource() = default;
  // The wall clock: the `now` of decisions and the times written to rows.
  virtual TimePoint Now() const = 0;
  // The monotonic clock of the loops' timers, deadlines and back-offs.
  virtual SteadyTimePoint SteadyNow() const = 0;
};

// The real clocks: std::chrono::system_clock and steady_clock. Stateless.
class SystemClockSource final : public ClockSource {
 public:
  TimePoint Now() const override { return Clock::now(); }
  SteadyTimePoint SteadyNow() const override { return std::chrono::steady_clock::now(); }
};

// The process-wide real clock (a SystemClockSource), for production wiring.
inline const ClockSource& RealClock() {
  static const SystemClockSource clock;
  return clock;
}

}  // namespace uppzy
