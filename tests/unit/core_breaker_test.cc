// The circuit breaker, step by step with an explicit clock.
#include <gtest/gtest.h>

#include "uppzy/breaker.h"

namespace uppzy {
namespace {

const TimePoint t0 = TimePoint(std::chrono::seconds(1'700'000'000));
const Outcome k503 = Outcome::Of(OutcomeKind::kServerError, 503);
const Outcome kOk = Outcome::Accepted("r");

TEST(Breaker, OpensAfterConsecutiveFailuresAndBlocksSubmissions) {
  CircuitBreaker b({3, Millis(1000)});
  EXPECT_TRUE(b.AllowSubmit(t0));
  EXPECT_FALSE(b.Record(k503, false, t0));
  EXPECT_FALSE(b.Record(k503, false, t0));
  EXPECT_TRUE(b.Record(k503, false, t0));
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_FALSE(b.AllowSubmit(t0 + Millis(999)));
}

TEST(Breaker, ASuccessInBetweenResetsTheRun) {
  CircuitBreaker b({3, Millis(1000)});
  b.Record(k503, false, t0);
  b.Record(k503, false, t0);
  b.Record(Outcome::Status("processing"), false, t0);
  b.Record(k503, false, t0);
  b.Record(k503, false, t0);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST(Breaker, HalfOpenLetsOneProbeThroughThenClosesOnSuccess) {
  CircuitBreaker b({1, Millis(1000)});
  b.Record(Outcome::Of(OutcomeKind::kNetwork), false, t0);
  ASSERT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_TRUE(b.AllowSubmit(t0 + Millis(1000)));
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_FALSE(b.AllowSubmit(t0 + Millis(1001))) << "only one probe";
  EXPECT_TRUE(b.Record(kOk, true, t0 + Millis(1100)));
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_TRUE(b.AllowSubmit(t0 + Millis(1101)));
}

TEST(Breaker, FailedProbeOpensAgainForAnotherCoolDown) {
  CircuitBreaker b({1, Millis(1000)});
  b.Record(Outcome::Of(OutcomeKind::kRateLimited, 429), false, t0);
  ASSERT_TRUE(b.AllowSubmit(t0 + Millis(1000)));
  EXPECT_TRUE(b.Record(k503, true, t0 + Millis(1200)));
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_FALSE(b.AllowSubmit(t0 + Millis(2100)));
  EXPECT_TRUE(b.AllowSubmit(t0 + Millis(2200)));
}

TEST(Breaker, ClientErrorsAndIncidentsDoNotCount) {
  CircuitBreaker b({2, Millis(1000)});
  b.Record(Outcome::Of(OutcomeKind::kBadRequest, 400), false, t0);
  b.Record(Outcome::Of(OutcomeKind::kUnauthorized, 401), false, t0);
  b.Record(k503, false, t0);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(ToString(BreakerState::kHalfOpen), "half_open");
}

}  // namespace
}  // namespace uppzy
