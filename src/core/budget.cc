#include "uppzy/budget.h"

#include <algorithm>

namespace uppzy {

std::chrono::milliseconds RateLimitBlock(std::optional<std::chrono::milliseconds> retry_after, int in_a_row) {
  using std::chrono::milliseconds;
  constexpr milliseconds kMin{100};
  constexpr milliseconds kMax{60000};
  if (retry_after) return std::clamp(*retry_after, kMin, kMax);
  const int doublings = std::clamp(in_a_row, 1, 7) - 1;  // 1 s .. 64 s, then the cap
  return std::clamp(milliseconds(1000LL << doublings), kMin, kMax);
}

int SubmissionsAllowed(int tokens, int calls_waiting, int slots) {
  int allowed = std::max(0, tokens - std::max(0, calls_waiting));
  if (slots >= 0) allowed = std::min(allowed, slots);
  return allowed;
}

namespace {
int64_t SecondOf(RateMeter::TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
}  // namespace

void RateMeter::Add(TimePoint now) {
  const int64_t s = SecondOf(now);
  if (s != second_) {
    previous_ = s == second_ + 1 ? current_ : 0;
    current_ = 0;
    second_ = s;
  }
  ++current_;
}

double RateMeter::PerSecond(TimePoint now) const {
  const int64_t s = SecondOf(now);
  // The part of the current second that has passed, so a rate early in a second is not halved.
  const double into = std::chrono::duration<double>(now.time_since_epoch()).count() - static_cast<double>(s);
  if (s == second_) return (previous_ + current_) / (1.0 + into);
  if (s == second_ + 1) return current_ / (1.0 + into);
  return 0.0;
}

}  // namespace uppzy
