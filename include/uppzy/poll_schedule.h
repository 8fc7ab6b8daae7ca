// Adaptive polling (issue 11): when to poll a submitted request next, from the answer times a site has
// shown so far, so that fewer status calls find the answer "not ready yet" at about the same delay.
//
// Two pure pieces, no I/O, no clock, no randomness (`now` is a parameter); neither throws:
// - AnswerTimeEstimate: the distribution of "time from submission until the answer is ready", fitted
//   from interval observations. We never see the moment an answer became ready, only that it was not
//   ready at one poll and was at the next, so each observation is an interval (lo, hi]. Treating the
//   upper end as the answer time would make the estimate depend on the schedule that produced it (a
//   wider schedule, later answers, a wider schedule...). The fit is the nonparametric maximum
//   likelihood estimate for interval-censored data (Turnbull's self-consistency iteration) on a fixed
//   log-spaced grid, so it stays put whatever the polls' spacing: a test runs generations of
//   learn-then-schedule and checks that the estimate does not drift.
// - PollPlan and NextPollTime: the next poll time of one request. With no usable estimate it is
//   exactly the fixed tick (previous poll + poll interval). With one, polls follow a plan built from
//   the estimate: long gaps while an answer is unlikely, the interval where it is likely, with the
//   mean ready-to-stored delay at the accepted delay. Both keep the vendor's minimum interval, never
//   pass the poll deadline, and honour a Retry-After.
//
// Value types; safe to share between threads once built (const methods only).
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "uppzy/job.h"

namespace uppzy {

// One finished request: its answer became ready after more than lo_ms and at most hi_ms, counted from
// the submission's acceptance. lo_ms is the time of the last poll that saw "processing" (0 if none),
// hi_ms the time of the poll that saw the answer, or +infinity for a request whose polls timed out
// (its answer came after lo_ms, if ever: dropping those would bias the estimate low).
struct AnswerInterval {
  double lo_ms = 0;
  double hi_ms = 0;
};

class AnswerTimeEstimate {
 public:
  // Fewer observations than this: not usable, and NextPollTime keeps the fixed tick.
  static constexpr size_t kMinSamples = 50;

  // Fits the estimate. Intervals with hi_ms <= lo_ms, a negative or non-finite lo_ms or a NaN hi_ms
  // are skipped; ends beyond the grid (10 minutes) are clipped to it.
  static AnswerTimeEstimate Fit(const std::vector<AnswerInterval>& observations);

  // An empty estimate: not usable.
  AnswerTimeEstimate() = default;

  bool usable() const { return samples_ >= kMinSamples; }
  size_t samples() const { return samples_; }

  // P(ready time <= ms). 0 for an empty estimate.
  double Cdf(double ms) const;
  // The smallest ms with Cdf(ms) >= p, p in (0, 1]; 0 for an empty estimate.
  double Quantile(double p) const;
  // The integral of t over (a_ms, b_ms] of the density: E[T; a < T <= b].
  double PartialMean(double a_ms, double b_ms) const;
  // The integral of t over (0, ms] of the density: E[T; T <= ms].
  double MeanBelow(double ms) const;

 private:
  std::vector<double> mass_;      // probability of each grid bin; empty when nothing was fitted
  std::vector<double> cum_mass_;  // mass below each bin edge (kBins + 1 entries)
  std::vector<double> cum_mean_;  // E[T; T < edge] at each bin edge
  size_t samples_ = 0;
};

struct PollSchedule {
  Millis interval{2500};  // UPPZY_POLL_INTERVAL_MS: the vendor's minimum between two polls
  Millis timeout{45000};  // UPPZY_POLL_TIMEOUT_MS: the plan ends there
  // UPPZY_POLL_TARGET_DELAY_MS: the mean ready-to-stored delay accepted for fewer calls. The fixed
  // 2.5 s tick gives about 1.25 s; a larger value saves more calls.
  Millis target_delay{1450};
  // The longest gap between two polls: a cap on the damage of a wrong estimate.
  Millis max_gap{10000};
};

// When to poll, counted from a submission's acceptance, for every job of a site: with no Retry-After,
// every job follows the same plan, so it is built once per estimate (by the caller, when its estimate
// changes), not per poll. Its gaps are the interval where answers are likely and longer where they are
// not, chosen so that the mean delay under the estimate is the accepted delay (see poll_schedule.cc).
class PollPlan {
 public:
  // An unusable estimate gives an empty plan: the fixed tick.
  static PollPlan Build(const AnswerTimeEstimate& estimate, const PollSchedule& schedule);

  PollPlan() = default;
  bool adaptive() const { return !offsets_.empty(); }
  // Poll times after acceptance, increasing, the last at the timeout.
  const std::vector<Millis>& offsets() const { return offsets_; }
  // Under the estimate: status calls per job, and the mean delay of an answer that came in time.
  double expected_calls() const { return expected_calls_; }
  double expected_delay_ms() const { return expected_delay_ms_; }

 private:
  std::vector<Millis> offsets_;
  double expected_calls_ = 0;
  double expected_delay_ms_ = 0;
};

// One request that is being polled.
struct PollProgress {
  TimePoint accepted_at{};  // when the submission was accepted (the plan counts from here)
  TimePoint last_poll{};    // when the latest poll was answered "processing"; accepted_at if none yet
  TimePoint deadline{};     // the poll deadline
  // The Retry-After of the latest "processing" answer, if it carried one.
  std::optional<Millis> retry_after;
};

// The next poll time. Never sooner than last_poll + interval (nor than now + retry_after), never later
// than the deadline. With `plan` null or not adaptive: max(last_poll + interval, now + retry_after),
// capped at the deadline, i.e. today's fixed tick. Otherwise the plan's first poll at least an interval
// after last_poll, within those bounds.
TimePoint NextPollTime(const PollProgress& job, TimePoint now, const PollPlan* plan,
                       const PollSchedule& schedule);

}  // namespace uppzy
