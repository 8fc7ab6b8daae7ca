// Adaptive polling, pure: the schedule's rules as a table, the estimate from interval observations, and
// simulated traffic (lognormal answer times, as the figures) run through generations of
// learn-then-schedule. No database, no network, no clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "uppzy/poll_schedule.h"

namespace uppzy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kAccepted = TimePoint(seconds(1'700'000'000));

double Ms(TimePoint t) { return std::chrono::duration<double, std::milli>(t - kAccepted).count(); }

// Answer times drawn from a lognormal, observed exactly (a narrow interval around each).
AnswerTimeEstimate ExactEstimate(double median_ms, double sigma, int n, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(std::log(median_ms), sigma);
  std::vector<AnswerInterval> obs;
  for (int i = 0; i < n; ++i) {
    const double t = dist(rng);
    obs.push_back({t - 1, t});
  }
  return AnswerTimeEstimate::Fit(obs);
}

PollProgress Progress(milliseconds last_poll_after_accept,
                      milliseconds deadline_after_accept = milliseconds(45000),
                      std::optional<milliseconds> retry_after = std::nullopt) {
  PollProgress p;
  p.accepted_at = kAccepted;
  p.last_poll = kAccepted + last_poll_after_accept;
  p.deadline = kAccepted + deadline_after_accept;
  p.retry_after = retry_after;
  return p;
}

TEST(PollSchedule, WithoutAnEstimateItIsTheFixedTickBoundedByTheDeadlineAndRetryAfter) {
  const PollSchedule s;  // 2.5 s interval
  const AnswerTimeEstimate few =
      ExactEstimate(12000, 0.6, static_cast<int>(AnswerTimeEstimate::kMinSamples) - 1);
  ASSERT_FALSE(few.usable());
  const PollPlan few_plan = PollPlan::Build(few, s);
  ASSERT_FALSE(few_plan.adaptive());
  struct Case {
    const char* name;
    milliseconds last_poll;
    milliseconds now;
    std::optional<milliseconds> retry_after;
    const PollPlan* plan;
    double want_ms;
  };
  const Case cases[] = {
      {"first poll", milliseconds(0), milliseconds(0), std::nullopt, nullptr, 2500},
      {"later poll", milliseconds(10000), milliseconds(10000), std::nullopt, nullptr, 12500},
      {"too few answers seen", milliseconds(10000), milliseconds(10000), std::nullopt, &few_plan, 12500},
      {"retry-after beyond the tick", milliseconds(10000), milliseconds(10000), milliseconds(8000), nullptr,
       18000},
      {"retry-after within the tick", milliseconds(10000), milliseconds(10000), milliseconds(1000), nullptr,
       12500},
      {"the deadline comes first", milliseconds(44000), milliseconds(44000), std::nullopt, nullptr, 45000},
      {"retry-after past the deadline", milliseconds(40000), milliseconds(40000), milliseconds(60000),
       nullptr, 45000},
  };
  for (const Case& c : cases) {
    const TimePoint at =
        NextPollTime(Progress(c.last_poll, milliseconds(45000), c.retry_after), kAccepted + c.now, c.plan, s);
    EXPECT_DOUBLE_EQ(Ms(at), c.want_ms) << c.name;
  }
}

TEST(PollSchedule, WithAnEstimateItWaitsLongerEarlyButNeverUnderTheIntervalOrPastTheDeadline) {
  const PollSchedule s;
  const AnswerTimeEstimate est = ExactEstimate(12000, 0.6, 5000);
  ASSERT_TRUE(est.usable());
  const PollPlan plan = PollPlan::Build(est, s);
  ASSERT_TRUE(plan.adaptive());
  EXPECT_NEAR(plan.expected_delay_ms(), 1500, 100);
  // Before most answers come, the first poll goes well past the fixed 2.5 s tick.
  const double first = Ms(NextPollTime(Progress(milliseconds(0)), kAccepted, &plan, s));
  EXPECT_GE(first, 5000);
  EXPECT_LE(first, 10000);  // max_gap
  for (int last = 0; last <= 44000; last += 500) {
    const TimePoint at = NextPollTime(Progress(milliseconds(last)), kAccepted + milliseconds(last), &plan, s);
    EXPECT_GE(Ms(at), std::min(last + 2500.0, 45000.0)) << "after a poll at " << last << " ms";
    EXPECT_LE(Ms(at), 45000) << "after a poll at " << last << " ms";
    EXPECT_LE(Ms(at) - last, 10000) << "after a poll at " << last << " ms";
  }
  // Retry-After is honoured over the estimate, within the deadline.
  EXPECT_DOUBLE_EQ(Ms(NextPollTime(Progress(milliseconds(12000), milliseconds(45000), milliseconds(9000)),
                                   kAccepted + milliseconds(12000), &plan, s)),
                   21000);
  // A smaller accepted delay means denser polls.
  PollSchedule tight = s;
  tight.target_delay = milliseconds(1000);
  const PollPlan tight_plan = PollPlan::Build(est, tight);
  EXPECT_LE(Ms(NextPollTime(Progress(milliseconds(0)), kAccepted, &tight_plan, tight)), first);
  EXPECT_GT(tight_plan.expected_calls(), plan.expected_calls());
}

TEST(AnswerTimeEstimate, HostileObservationsAreSkippedNotFitted) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const AnswerTimeEstimate est =
      AnswerTimeEstimate::Fit({{nan, 10}, {-5, 10}, {10, 5}, {10, 10}, {inf, inf}, {0, nan}});
  EXPECT_EQ(est.samples(), 0u);
  EXPECT_FALSE(est.usable());
  EXPECT_EQ(est.Cdf(1e9), 0);
  // A timed-out request (hi infinite) counts: its answer came after lo.
  EXPECT_EQ(AnswerTimeEstimate::Fit({{45000, inf}}).samples(), 1u);
}

TEST(AnswerTimeEstimate, RecoversTheMedianFromExactAndFromFixedTickIntervals) {
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> dist(std::log(12000.0), 0.6);
  std::vector<AnswerInterval> ticks;
  for (int i = 0; i < 5000; ++i) {
    const double t = dist(rng);
    const double hi = std::ceil(t / 2500) * 2500;  // the fixed tick's poll that saw it
    ticks.push_back({hi - 2500, hi});
  }
  const AnswerTimeEstimate exact = ExactEstimate(12000, 0.6, 5000);
  const AnswerTimeEstimate tick = AnswerTimeEstimate::Fit(ticks);
  EXPECT_NEAR(exact.Quantile(0.5), 12000, 600);
  EXPECT_NEAR(tick.Quantile(0.5), 12000, 800);
  EXPECT_NEAR(tick.Quantile(0.9), 12000 * std::exp(0.6 * 1.2816), 2500);
  EXPECT_NEAR(tick.Cdf(12000), 0.5, 0.05);
  // The upper ends alone would have said 1.25 s later: the interval fit does not.
  EXPECT_LT(tick.Quantile(0.5), 12000 + 1000);
}

// One simulated job: polls from acceptance until the answer is seen or the deadline passes.
struct Simulated {
  int calls = 0;
  double delay_ms = -1;  // poll that saw the answer - the moment it became ready; -1 if timed out
  AnswerInterval observed;
};

Simulated Simulate(double ready_ms, const PollPlan* plan, const PollSchedule& s) {
  Simulated r;
  double last = 0;
  double last_processing = 0;
  for (;;) {
    const TimePoint at = NextPollTime(
        Progress(std::chrono::duration_cast<milliseconds>(std::chrono::duration<double, std::milli>(last))),
        kAccepted + std::chrono::duration_cast<milliseconds>(std::chrono::duration<double, std::milli>(last)),
        plan, s);
    const double t = Ms(at);
    ++r.calls;
    if (ready_ms <= t) {
      r.delay_ms = t - ready_ms;
      r.observed = {last_processing, t};
      return r;
    }
    if (t >= 45000) {
      r.observed = {t, std::numeric_limits<double>::infinity()};
      return r;
    }
    last = t;
    last_processing = t;
  }
}

struct Generation {
  double calls_per_job = 0;
  double delay_p50_ms = 0;
  double delay_p95_ms = 0;
  double timeouts = 0;
  std::vector<AnswerInterval> observed;
};

Generation RunTraffic(const std::vector<double>& ready, const PollPlan* plan, const PollSchedule& s) {
  Generation g;
  std::vector<double> delays;
  long calls = 0;
  for (double t : ready) {
    const Simulated r = Simulate(t, plan, s);
    calls += r.calls;
    if (r.delay_ms >= 0) {
      delays.push_back(r.delay_ms);
    } else {
      g.timeouts += 1;
    }
    g.observed.push_back(r.observed);
  }
  std::sort(delays.begin(), delays.end());
  g.calls_per_job = static_cast<double>(calls) / static_cast<double>(ready.size());
  g.delay_p50_ms = delays[delays.size() / 2];
  g.delay_p95_ms = delays[delays.size() * 95 / 100];
  return g;
}

std::vector<double> Lognormal(double median_ms, double sigma, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(std::log(median_ms), sigma);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(rng);
  return v;
}

TEST(AdaptivePolling, FewerCallsAtAboutTheSameDelayAndNoDriftOverTenGenerations) {
  const PollSchedule s;  // 2.5 s interval, 1.45 s accepted delay
  const Generation fixed = RunTraffic(Lognormal(12000, 0.6, 4000, 1), nullptr, s);
  std::vector<AnswerInterval> learned = fixed.observed;
  for (int gen = 1; gen <= 10; ++gen) {
    const AnswerTimeEstimate est = AnswerTimeEstimate::Fit(learned);
    // The estimate learned from the previous generation's polls stays on the true median, although
    // every generation after the first polls on a wider, uneven schedule.
    EXPECT_NEAR(est.Quantile(0.5), 12000, 800) << "generation " << gen;
    EXPECT_NEAR(est.Quantile(0.9), 12000 * std::exp(0.6 * 1.2816), 2500) << "generation " << gen;
    const PollPlan plan = PollPlan::Build(est, s);
    const Generation g = RunTraffic(Lognormal(12000, 0.6, 4000, 100 + static_cast<uint64_t>(gen)), &plan, s);
    // At least 25% fewer status calls than the fixed tick (about 31% here)...
    EXPECT_LE(g.calls_per_job, 0.75 * fixed.calls_per_job) << "generation " << gen;
    // ...for a few tenths of a second of delay.
    EXPECT_LE(g.delay_p50_ms, fixed.delay_p50_ms + 600) << "generation " << gen;
    EXPECT_LE(g.delay_p95_ms, fixed.delay_p95_ms + 1500) << "generation " << gen;
    EXPECT_LE(g.timeouts, fixed.timeouts + 20) << "generation " << gen;
    learned = g.observed;
    std::printf("generation %d: median %.0f ms, %.2f calls/job, p50 %.0f ms, p95 %.0f ms\n", gen,
                est.Quantile(0.5), g.calls_per_job, g.delay_p50_ms, g.delay_p95_ms);
    if (gen == 10) {
      std::printf(
          "fixed: %.2f calls/job, delay p50 %.0f ms p95 %.0f ms; adaptive: %.2f calls/job, p50 %.0f ms p95 "
          "%.0f ms\n",
          fixed.calls_per_job, fixed.delay_p50_ms, fixed.delay_p95_ms, g.calls_per_job, g.delay_p50_ms,
          g.delay_p95_ms);
    }
  }
}

TEST(AdaptivePolling, FollowsASlowerVendorOnceTheWindowHoldsItsAnswers) {
  // The estimate is fitted over a window of recent answers (the worker reads the site's last 10 minutes).
  // The vendor's median moves from 12 s to 25 s: jobs scheduled on the old estimate still see every
  // answer (the schedule never gaps more than max_gap), and the next fit is on the new median.
  const PollSchedule s;
  const AnswerTimeEstimate old_est =
      AnswerTimeEstimate::Fit(RunTraffic(Lognormal(12000, 0.6, 2000, 3), nullptr, s).observed);
  const PollPlan old_plan = PollPlan::Build(old_est, s);
  const Generation during = RunTraffic(Lognormal(25000, 0.6, 2000, 4), &old_plan, s);
  EXPECT_LE(during.delay_p95_ms, 10000);
  const AnswerTimeEstimate new_est = AnswerTimeEstimate::Fit(during.observed);
  EXPECT_NEAR(new_est.Quantile(0.5), 25000, 2000);
  // Half a window of each: the median lies between, and one more window later it is the new one.
  std::vector<AnswerInterval> mixed(during.observed.begin(), during.observed.begin() + 1000);
  const Generation before = RunTraffic(Lognormal(12000, 0.6, 1000, 5), &old_plan, s);
  mixed.insert(mixed.end(), before.observed.begin(), before.observed.end());
  const double mid = AnswerTimeEstimate::Fit(mixed).Quantile(0.5);
  EXPECT_GT(mid, 13000);
  EXPECT_LT(mid, 24000);
}

}  // namespace
}  // namespace uppzy
