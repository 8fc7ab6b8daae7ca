#include "uppzy/poll_schedule.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

namespace uppzy {
namespace {

// The grid: bin 0 is [0, 250 ms), then log-spaced bins up to 10 minutes, each about 11.6% wider than
// the one before: finer than any poll interval where answers are (seconds to a minute), coarse enough
// that a few hundred observations fill it.
constexpr size_t kBins = 72;
constexpr double kFirstEdgeMs = 250;
constexpr double kLastEdgeMs = 600000;

const std::array<double, kBins + 1>& Edges() {
  static const std::array<double, kBins + 1> edges = [] {
    std::array<double, kBins + 1> e{};
    e[0] = 0;
    const double ratio = std::pow(kLastEdgeMs / kFirstEdgeMs, 1.0 / static_cast<double>(kBins - 1));
    for (size_t i = 1; i <= kBins; ++i) e[i] = kFirstEdgeMs * std::pow(ratio, static_cast<double>(i - 1));
    e[kBins] = kLastEdgeMs;
    return e;
  }();
  return edges;
}

// The share of bin b's width inside (lo, hi].
double Overlap(size_t b, double lo, double hi) {
  const auto& e = Edges();
  const double l = std::max(lo, e[b]);
  const double u = std::min(hi, e[b + 1]);
  return u > l ? (u - l) / (e[b + 1] - e[b]) : 0.0;
}

// The first bin whose upper edge is above `ms`.
size_t BinOf(double ms) {
  const auto& e = Edges();
  const auto it = std::upper_bound(e.begin() + 1, e.end(), ms);
  return std::min(static_cast<size_t>(it - e.begin() - 1), kBins - 1);
}

struct Observed {
  size_t first = 0;               // first bin overlapping the interval
  std::vector<double> fractions;  // of bins first, first + 1, ...
};

}  // namespace

AnswerTimeEstimate AnswerTimeEstimate::Fit(const std::vector<AnswerInterval>& observations) {
  std::vector<Observed> obs;
  obs.reserve(observations.size());
  for (const AnswerInterval& o : observations) {
    if (!std::isfinite(o.lo_ms) || std::isnan(o.hi_ms) || o.lo_ms < 0) continue;
    const double lo = std::min(o.lo_ms, kLastEdgeMs);
    const double hi = std::min(o.hi_ms, kLastEdgeMs);
    if (hi <= lo) continue;
    Observed x;
    x.first = BinOf(lo);
    for (size_t b = x.first; b < kBins; ++b) {
      const double f = Overlap(b, lo, hi);
      if (f <= 0 && b > x.first) break;
      x.fractions.push_back(f);
    }
    obs.push_back(std::move(x));
  }
  AnswerTimeEstimate est;
  est.samples_ = obs.size();
  if (obs.empty()) return est;

  // Turnbull's self-consistency iteration: each observation's unit of probability is spread over the
  // bins its interval overlaps, in proportion to the current mass there (times the overlap); the new
  // mass of a bin is the average of what it received. It converges to the maximum likelihood estimate
  // of the interval-censored data, whatever the intervals' widths.
  std::vector<double> mass(kBins, 1.0 / kBins);
  std::vector<double> next(kBins);
  std::vector<double> smooth(kBins);
  const double n = static_cast<double>(obs.size());
  for (int iteration = 0; iteration < 500; ++iteration) {
    std::fill(next.begin(), next.end(), 0.0);
    for (const Observed& x : obs) {
      double total = 0;
      for (size_t k = 0; k < x.fractions.size(); ++k) total += mass[x.first + k] * x.fractions[k];
      if (total <= 0) continue;
      for (size_t k = 0; k < x.fractions.size(); ++k)
        next[x.first + k] += mass[x.first + k] * x.fractions[k] / total;
    }
    // The smoothing step of EMS (EM with smoothing): spread each bin's mass a little onto its two
    // neighbours. When every job was polled on the same plan, where an answer fell inside one gap is not
    // in the data at all, and plain EM would keep its start (flat inside each gap: answers seemingly
    // right after the submission); the neighbours' shape fills it in.
    for (size_t b = 0; b < kBins; ++b) next[b] /= n;
    smooth[0] = 0.75 * next[0] + 0.25 * next[1];
    for (size_t b = 1; b + 1 < kBins; ++b)
      smooth[b] = 0.25 * next[b - 1] + 0.5 * next[b] + 0.25 * next[b + 1];
    smooth[kBins - 1] = 0.25 * next[kBins - 2] + 0.75 * next[kBins - 1];
    next.swap(smooth);
    double change = 0;
    double sum = 0;
    for (size_t b = 0; b < kBins; ++b) {
      change = std::max(change, std::abs(next[b] - mass[b]));
      sum += next[b];
    }
    if (sum > 0) {
      for (double& m : next) m /= sum;
    }
    mass.swap(next);
    if (change < 1e-7) break;
  }
  est.mass_ = std::move(mass);
  const auto& e = Edges();
  est.cum_mass_.assign(kBins + 1, 0.0);
  est.cum_mean_.assign(kBins + 1, 0.0);
  for (size_t b = 0; b < kBins; ++b) {
    est.cum_mass_[b + 1] = est.cum_mass_[b] + est.mass_[b];
    est.cum_mean_[b + 1] = est.cum_mean_[b] + est.mass_[b] * (e[b] + e[b + 1]) / 2;
  }
  return est;
}

double AnswerTimeEstimate::Cdf(double ms) const {
  if (mass_.empty() || !(ms > 0)) return 0;
  if (ms >= kLastEdgeMs) return 1;
  const auto& e = Edges();
  const size_t b = BinOf(ms);
  return std::min(1.0, cum_mass_[b] + mass_[b] * (ms - e[b]) / (e[b + 1] - e[b]));
}

double AnswerTimeEstimate::Quantile(double p) const {
  if (mass_.empty()) return 0;
  const auto& e = Edges();
  for (size_t b = 0; b < kBins; ++b) {
    if (mass_[b] > 0 && cum_mass_[b] + mass_[b] >= p) {
      return e[b] + (e[b + 1] - e[b]) * std::clamp((p - cum_mass_[b]) / mass_[b], 0.0, 1.0);
    }
  }
  return kLastEdgeMs;
}

double AnswerTimeEstimate::MeanBelow(double ms) const {
  if (mass_.empty() || !(ms > 0)) return 0;
  if (ms >= kLastEdgeMs) return cum_mean_[kBins];
  const auto& e = Edges();
  const size_t b = BinOf(ms);
  // uniform within the bin: the density there is mass / width, and the integral of t is (x^2 - l^2) / 2
  return cum_mean_[b] + mass_[b] / (e[b + 1] - e[b]) * (ms * ms - e[b] * e[b]) / 2;
}

double AnswerTimeEstimate::PartialMean(double a_ms, double b_ms) const {
  return b_ms > a_ms ? MeanBelow(b_ms) - MeanBelow(a_ms) : 0;
}

namespace {

double Seconds(Millis m) { return static_cast<double>(m.count()); }

// The plan for one value of k: each gap is the shortest, between the interval and max_gap, for which
// gap x P(answer in the gap | not ready at its start) >= k. Balancing one call against the delay
// that a longer gap adds to the answers inside it gives exactly that rule (minimise calls + lambda x
// delay; k = 2 / lambda): gaps are long while answers are unlikely (before most come, and in a thin
// tail) and the interval where they are likely.
std::vector<double> PlanFor(const AnswerTimeEstimate& est, const PollSchedule& s, double k) {
  const double min_gap = Seconds(s.interval);
  const double max_gap = std::max(min_gap, Seconds(s.max_gap));
  const double end = Seconds(s.timeout);
  constexpr double kStepMs = 100;
  std::vector<double> offsets;
  double t = 0;
  while (t < end) {
    const double survive = 1.0 - est.Cdf(t);
    double gap = max_gap;
    if (survive > 1e-12) {
      for (double g = min_gap; g < max_gap; g += kStepMs) {
        if (g * (est.Cdf(t + g) - est.Cdf(t)) / survive >= k) {
          gap = g;
          break;
        }
      }
    }
    t = std::min(t + gap, end);
    offsets.push_back(t);
  }
  return offsets;
}

// E[calls] and E[delay of an answer that came before the timeout] of a plan under the estimate.
std::pair<double, double> Expect(const AnswerTimeEstimate& est, const std::vector<double>& offsets) {
  double calls = 0;
  double delay = 0;
  double prev = 0;
  for (double o : offsets) {
    calls += 1.0 - est.Cdf(prev);
    delay += o * (est.Cdf(o) - est.Cdf(prev)) - est.PartialMean(prev, o);
    prev = o;
  }
  const double answered = est.Cdf(prev);
  return {calls, answered > 0 ? delay / answered : 0};
}

}  // namespace

PollPlan PollPlan::Build(const AnswerTimeEstimate& estimate, const PollSchedule& schedule) {
  PollPlan plan;
  if (!estimate.usable()) return plan;
  // k by bisection (on a log scale) so that the mean delay is the accepted delay: a larger k, longer
  // gaps, more delay. k = 0 is the densest plan (every gap the interval: today's fixed tick).
  const double target = Seconds(schedule.target_delay);
  std::vector<double> best = PlanFor(estimate, schedule, 0);
  if (Expect(estimate, best).second < target) {
    double lo = 1;  // ms: gaps barely longer than the interval
    double hi = Seconds(schedule.max_gap) * 2;
    if (Expect(estimate, PlanFor(estimate, schedule, hi)).second <= target) {
      best = PlanFor(estimate, schedule, hi);
    } else {
      for (int i = 0; i < 30; ++i) {
        const double mid = std::sqrt(lo * hi);
        std::vector<double> p = PlanFor(estimate, schedule, mid);
        if (Expect(estimate, p).second <= target) {
          lo = mid;
          best = std::move(p);
        } else {
          hi = mid;
        }
      }
    }
  }
  const auto [calls, delay] = Expect(estimate, best);
  plan.expected_calls_ = calls;
  plan.expected_delay_ms_ = delay;
  plan.offsets_.reserve(best.size());
  for (double o : best) plan.offsets_.push_back(Millis(static_cast<int64_t>(std::llround(o))));
  return plan;
}

TimePoint NextPollTime(const PollProgress& job, TimePoint now, const PollPlan* plan,
                       const PollSchedule& schedule) {
  TimePoint earliest = job.last_poll + schedule.interval;
  if (job.retry_after) earliest = std::max(earliest, now + *job.retry_after);
  if (plan == nullptr || !plan->adaptive()) return std::min(earliest, job.deadline);
  // The plan's first poll at least an interval after the last one. A job off the plan (a Retry-After,
  // a failed poll's backoff, adopted from a dead worker) rejoins it there.
  const Millis since =
      std::chrono::duration_cast<Millis>(job.last_poll - job.accepted_at) + schedule.interval;
  const auto& offsets = plan->offsets();
  const auto it = std::lower_bound(offsets.begin(), offsets.end(), since);
  if (it == offsets.end()) return std::min(earliest, job.deadline);
  return std::min(std::max(job.accepted_at + *it, earliest), job.deadline);
}

}  // namespace uppzy
