// The shared budget's pure decisions (include/uppzy/budget.h): how long a 429 blocks a site, how many
// new submissions a grant allows once waiting polls are served, and the rate a worker reports.
#include "uppzy/budget.h"

#include <gtest/gtest.h>

namespace uppzy {
namespace {

using std::chrono::milliseconds;

struct BlockCase {
  std::optional<milliseconds> retry_after;
  int in_a_row;
  milliseconds want;
};

TEST(RateLimitBlock, RetryAfterWinsWithinBoundsElseTheBackOffDoubles) {
  const BlockCase cases[] = {
      {milliseconds(3000), 1, milliseconds(3000)},       // the server's word
      {milliseconds(3000), 5, milliseconds(3000)},       // however many in a row
      {milliseconds(0), 1, milliseconds(100)},           // "Retry-After: 0" does not spin
      {milliseconds(86400000), 1, milliseconds(60000)},  // a hostile day-long block is cut to a minute
      {std::nullopt, 1, milliseconds(1000)},
      {std::nullopt, 2, milliseconds(2000)},
      {std::nullopt, 3, milliseconds(4000)},
      {std::nullopt, 7, milliseconds(60000)},  // 64 s, capped
      {std::nullopt, 1000, milliseconds(60000)},
      {std::nullopt, 0, milliseconds(1000)},  // a caller's zero counts as the first
  };
  for (const auto& c : cases) {
    EXPECT_EQ(RateLimitBlock(c.retry_after, c.in_a_row), c.want)
        << (c.retry_after ? c.retry_after->count() : -1) << " ms, " << c.in_a_row << " in a row";
  }
}

TEST(SubmissionsAllowed, WaitingPollsComeFirstAndSlotsCap) {
  struct Case {
    int tokens, waiting, slots, want;
  };
  const Case cases[] = {
      {5, 0, -1, 5},   // no polls waiting, no in-flight cap: every token may start a submission
      {5, 3, -1, 2},   // three polls are served first
      {5, 9, -1, 0},   // more polls waiting than tokens: no new work is claimed
      {5, 0, 2, 2},    // max_in_flight leaves two slots
      {5, 1, 0, 0},    // the site is at max_in_flight
      {0, 0, -1, 0},   // an empty bucket claims nothing (over-limit work stays queued)
      {5, -4, -1, 5},  // a negative count is no count
  };
  for (const auto& c : cases) {
    EXPECT_EQ(SubmissionsAllowed(c.tokens, c.waiting, c.slots), c.want)
        << c.tokens << " tokens, " << c.waiting << " waiting, " << c.slots << " slots";
  }
}

TEST(RateMeter, CountsTheLastSecondOrTwo) {
  RateMeter m;
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::seconds(1000));
  EXPECT_EQ(m.PerSecond(t0), 0.0);
  for (int i = 0; i < 10; ++i) m.Add(t0 + milliseconds(i * 100));  // 10 calls in second 1000
  EXPECT_NEAR(m.PerSecond(t0 + milliseconds(999)), 10 / 1.999, 1e-9);
  for (int i = 0; i < 20; ++i) m.Add(t0 + milliseconds(1000 + i * 50));  // 20 in second 1001
  EXPECT_NEAR(m.PerSecond(t0 + milliseconds(1999)), 30 / 1.999, 1e-9);
  EXPECT_NEAR(m.PerSecond(t0 + milliseconds(2500)), 20 / 1.5, 1e-9) << "second 1000 has left the window";
  EXPECT_EQ(m.PerSecond(t0 + milliseconds(3500)), 0.0) << "nothing sent lately";
}

}  // namespace
}  // namespace uppzy
