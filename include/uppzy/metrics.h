// Prometheus metrics: a small registry of counters, gauges and histograms with labels, rendered in
// the text exposition format (version 0.0.4) on the worker's GET /metrics.
//
// Thread-safety: everything here is thread-safe. Recording (Counter::Inc, Gauge::Set,
// Histogram::Observe) is lock-free: relaxed atomics only, no allocation. Family::With takes a mutex
// and may allocate the first time a label combination is seen: on hot paths look the child up once
// and keep the reference (children live as long as their registry; Default() lives forever).
//
// The worker's metrics are named in WorkerMetrics below; their helpers are one line at each call site.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/job.h"

namespace uppzy {
struct WorkerCounters;
}

namespace uppzy::metrics {

class Counter {
 public:
  // `by` must be >= 0 (a counter only goes up).
  void Inc(double by = 1.0) { value_.fetch_add(by, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds` ascending; the +Inf bucket is implied.
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
  };
  Snapshot Read() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

enum class Type { kCounter, kGauge, kHistogram };

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  Type type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends "# HELP", "# TYPE" and one line per child (histograms: _bucket, _sum, _count).
  void Render(std::string* out) const;

 protected:
  virtual void RenderChildren(std::string* out) const = 0;
  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mu_;
};

// All the children of one metric name, one per combination of label values.
template <typename M>
class Family : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;
  // The child for these label values, one per label name in order. Created at first use; the
  // reference stays valid. Throws std::invalid_argument when the number of values is wrong.
  M& With(const std::vector<std::string>& label_values);
  // The child of a family without labels.
  M& Get() { return With({}); }

 protected:
  void RenderChildren(std::string* out) const override;

 private:
  friend class Registry;
  std::vector<double> bounds_;  // histograms only
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_;
};

class Registry {
 public:
  // Registers a metric family, or returns the one already registered under `name` when it has the
  // same type and labels (throws std::logic_error otherwise). Names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]*; counters should end in _total.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names, std::vector<double> upper_bounds);

  // Every family in registration order, in the text exposition format.
  std::string Render() const;

 private:
  FamilyBase* Find(const std::string& name, Type type, const std::vector<std::string>& label_names);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// The process-wide registry that GET /metrics renders.
Registry& Default();

// A sample value as Prometheus text: integers without a fraction, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);
// A label value with \\, \" and \n escaped.
std::string EscapeLabelValue(std::string_view v);

// The worker's metrics, registered in Default() on first use. Names and labels are a contract
// (dashboards and alerts use them); the README lists them.
struct WorkerMetrics {
  static WorkerMetrics& Get();

  // uppzy_jobs_finished_total{state, error_kind}: jobs this process finished; error_kind "none" for
  // completed jobs.
  Family<Counter>& finished;
  // uppzy_poll_timeouts_total: attempts whose poll deadline passed (retried or failed).
  Counter& poll_timeouts;
  // uppzy_time_to_answer_seconds: from the job's INSERT (created_at) to its stored answer.
  Histogram& time_to_answer;
  // uppzy_http_request_duration_seconds{endpoint}: one Uppzy exchange ("submit", "status", ...).
  Family<Histogram>& http_duration;
  // From the database (uppzy.chat_job_stats, refreshed every UPPZY_STATS_INTERVAL_MS):
  // uppzy_queue_depth{state}: jobs queued, submitting, polling and retrying;
  Family<Gauge>& queue_depth;
  // uppzy_oldest_queued_age_seconds: now() - created_at of the oldest queued job, 0 when none;
  Gauge& oldest_queued_age;
  // uppzy_open_incidents: open rows of uppzy.incidents (any API key);
  Gauge& open_incidents;
  // uppzy_database_up: 1 when the last refresh reached the database.
  Gauge& database_up;
  // uppzy_http_requests_waiting: requests due to be sent to Uppzy that wait for a free connection (or
  // HTTP/2 stream), in the client's queue or the engine's ready queues; sampled by the engine.
  Gauge& http_waiting;
  // uppzy_http_connection_wait_seconds_total: time requests spent queued in the client for a
  // connection (their timeout starts only when they leave the queue).
  Counter& http_connection_wait;

  // One call per finished job: counts finished{state, error_kind} (and a poll timeout).
  void JobFinished(JobState state, ErrorKind kind);
  // One call per retried attempt: counts a poll timeout when that was the cause (the retry itself is
  // in WorkerCounters::retries).
  void AttemptRetried(ErrorKind kind);
  // One call per Uppzy exchange.
  void HttpExchange(std::string_view endpoint, std::chrono::milliseconds duration);
  // One call per stored answer: `created_at` is the job's INSERT time.
  void Answered(TimePoint created_at, TimePoint now);
};

// WorkerCounters as Prometheus text: uppzy_submissions_total, uppzy_polls_total,
// uppzy_retries_total, uppzy_fenced_writes_total, uppzy_rescued_total, uppzy_jobs_in_flight and
// uppzy_circuit_breaker_state (0 closed, 1 open, 2 half-open).
std::string RenderWorkerCounters(const WorkerCounters& counters);

}  // namespace uppzy::metrics
