// The worker's Prometheus metrics, on prometheus-cpp (Debian's prometheus-cpp-dev, 1.0).
//
// WorkerMetrics registers the worker's families in a prometheus::Registry it is given, creates every
// series at once (so rate() and absent() behave before the first event), and is the one place where an
// event is counted: the engine, the coordinator and maintenance record into the object they are handed,
// and whoever wants a number back (the worker's exit line, the tests) reads it from the same object.
// There is no second set of counters. Exposition() renders a registry with prometheus::TextSerializer;
// the worker serves it on its own HTTP endpoint (uppzy/health_server.h).
//
// Names, types, labels and histogram buckets are a contract (dashboards and alerts use them; the README
// lists them; tests/e2e/metrics_e2e_test.cc keeps the list of every name and series):
//   counters   uppzy_submissions_total, uppzy_polls_total, uppzy_retries_total,
//              uppzy_fenced_writes_total, uppzy_rejected_writes_total, uppzy_rescued_total,
//              uppzy_jobs_finished_total{state, error_kind}, uppzy_poll_timeouts_total,
//              uppzy_http_connection_wait_seconds_total
//   gauges     uppzy_jobs_in_flight, uppzy_circuit_breaker_state, uppzy_http_requests_waiting,
//              uppzy_queue_depth{state}, uppzy_oldest_queued_age_seconds, uppzy_open_incidents,
//              uppzy_database_up
//   histograms uppzy_time_to_answer_seconds, uppzy_http_request_duration_seconds{endpoint}
// and, per site, series made when the site is first seen (adaptive polling's figures):
//   histograms uppzy_status_calls_per_answer{site}: status calls a completed job needed;
//              uppzy_answer_seen_gap_seconds{site}: the time between the last poll that found the
//              answer not ready and the poll that found it, the most the answer waited for us (its
//              ready-to-stored delay is between 0 and this)
//   gauges     uppzy_poll_plan_expected_calls{site}, uppzy_poll_plan_expected_delay_seconds{site}: the
//              adaptive plan in force, under the site's estimate (0 while the site polls on the tick)
//
// Thread-safety: every method may be called from any thread. Counters and gauges are relaxed atomics;
// a histogram observation takes that histogram's mutex (prometheus-cpp); a labelled series seen for
// the first time is created under its family's mutex.
//
// Errors: the constructor throws std::invalid_argument (from prometheus-cpp) when the registry already
// holds one of these names with another type, or a common label name is invalid or collides with one
// of ours. Nothing else here throws.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "uppzy/breaker.h"
#include "uppzy/job.h"

namespace uppzy::metrics {

// The Content-Type of Exposition()'s text.
inline constexpr const char* kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

// Every family of `registry` in the text exposition format (version 0.0.4).
std::string Exposition(const prometheus::Registry& registry);

class WorkerMetrics {
 public:
  // Registers the families in `registry`, which must outlive this object, and creates every series.
  // `common` labels go on every series (the multi-site worker adds {"site", ...}); several
  // WorkerMetrics with different common labels may share one registry, one family per name.
  explicit WorkerMetrics(prometheus::Registry& registry, const prometheus::Labels& common = {});
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // The engine: one call per event.
  void Submitted();  // a submission sent (POST chat/async)
  void Polled();     // a status request sent
  // A job finished: uppzy_jobs_finished_total{state, error_kind} (error_kind "none" when completed),
  // and uppzy_poll_timeouts_total when that was the cause.
  void JobFinished(JobState state, ErrorKind kind);
  // An attempt failed in a retryable way and was rescheduled: uppzy_retries_total, and
  // uppzy_poll_timeouts_total when that was the cause.
  void AttemptRetried(ErrorKind kind);
  // An answer stored: `created_at` is the job's INSERT time (ignored when unknown, the epoch).
  void Answered(TimePoint created_at, TimePoint now);
  // An answer found by the polls of `site`: how many status calls it took, and the gap between the last
  // poll that found it not ready (or the acceptance) and the one that found it.
  void AnswerSeen(const std::string& site, int status_calls, double gap_seconds);
  // Maintenance: the poll plan of `site` now (0, 0 when it polls on the fixed tick).
  void SetPollPlan(const std::string& site, double expected_calls, double expected_delay_seconds);
  // One exchange with Uppzy; `endpoint` is ToString(RequestKind): "submit", "status", ...
  void HttpExchange(std::string_view endpoint, std::chrono::milliseconds duration);
  void SetInFlight(size_t jobs);
  void SetBreakerState(BreakerState state);  // 0 closed, 1 open, 2 half-open
  void SetHttpWaiting(size_t requests);
  void AddConnectionWait(double seconds);  // `seconds` >= 0

  // The shared request budget (issue 10).
  void BudgetStatement();                                   // a grant or block statement run (coordinator)
  void TokensGranted(const std::string& site, int tokens);  // coordinator
  void RateLimited(const std::string& site);                // a 429 from Uppzy (engine)
  // Coordinator, after each grant: the site's rate in force (requests/s, 0: no limit) and whether a
  // 429 blocks it now.
  void SetSiteBudget(const std::string& site, double rate_per_s, bool blocked);
  void SetCallsWaitingForTokens(const std::string& site, int calls);  // engine
  long long budget_statements() const;
  // Maintenance, per site (uppzy.site_queues, cached like the queue gauges): its unfinished jobs by
  // state, and its open incidents.
  void SetSiteJobs(const std::string& site, std::string_view state, long long jobs);
  void SetSiteOpenIncidents(const std::string& site, long long incidents);

  // The coordinator.
  void WritesFenced(size_t writes);  // refused by the fencing guard
  void WriteRejected();              // refused by the database for good
  void Rescued(int rows);

  // Maintenance: the database gauges (uppzy.chat_job_stats and uppzy.incidents, cached).
  void SetQueueDepth(std::string_view state, long long jobs);
  void SetOldestQueuedAge(double seconds);
  void SetOpenIncidents(long long incidents);
  void SetDatabaseUp(bool up);

  // What was recorded, read back from the same series.
  long long submissions() const;
  long long polls() const;
  long long retries() const;
  long long completed() const;  // finished{completed, none}
  long long failed() const;     // every finished{failed, *}
  long long finished(JobState state, ErrorKind kind) const;
  long long poll_timeouts() const;
  long long fenced_writes() const;
  long long rejected_writes() const;
  long long rescued() const;
  long long in_flight() const;
  BreakerState breaker_state() const;
  double queue_depth(std::string_view state) const;  // NaN for a state never set
  double oldest_queued_age() const;
  long long open_incidents() const;
  bool database_up() const;
  double http_waiting() const;

 private:
  // The labels of a series: `common` plus these.
  prometheus::Labels With(std::initializer_list<std::pair<const std::string, std::string>> labels) const;
  prometheus::Counter& Finished(JobState state, ErrorKind kind);

  const prometheus::Labels common_;
  prometheus::Family<prometheus::Counter>& finished_family_;
  prometheus::Family<prometheus::Gauge>& queue_depth_family_;
  prometheus::Counter& submissions_;
  prometheus::Counter& polls_;
  prometheus::Counter& retries_;
  prometheus::Counter& fenced_writes_;
  prometheus::Counter& rejected_writes_;
  prometheus::Counter& rescued_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& breaker_state_;
  prometheus::Counter& poll_timeouts_;
  prometheus::Histogram& time_to_answer_;
  prometheus::Gauge& oldest_queued_age_;
  prometheus::Gauge& open_incidents_;
  prometheus::Gauge& database_up_;
  prometheus::Gauge& http_waiting_;
  prometheus::Counter& http_connection_wait_;
  // uppzy_http_request_duration_seconds, one series per endpoint, all made at construction.
  std::array<std::pair<std::string_view, prometheus::Histogram*>, 4> http_duration_;
  prometheus::Family<prometheus::Histogram>& http_duration_family_;
  prometheus::Family<prometheus::Histogram>& status_calls_family_;
  prometheus::Family<prometheus::Histogram>& seen_gap_family_;
  prometheus::Family<prometheus::Gauge>& plan_calls_family_;
  prometheus::Family<prometheus::Gauge>& plan_delay_family_;
  prometheus::Counter& budget_statements_;
  prometheus::Family<prometheus::Counter>& tokens_granted_family_;
  prometheus::Family<prometheus::Counter>& rate_limited_family_;
  prometheus::Family<prometheus::Gauge>& site_rate_family_;
  prometheus::Family<prometheus::Gauge>& site_blocked_family_;
  prometheus::Family<prometheus::Gauge>& waiting_tokens_family_;
  prometheus::Family<prometheus::Gauge>& site_jobs_family_;
  prometheus::Family<prometheus::Gauge>& site_incidents_family_;

  mutable std::mutex mu_;  // guards the two maps below (their series are thread-safe themselves)
  std::map<std::pair<JobState, ErrorKind>, prometheus::Counter*> finished_;
  std::map<std::string, prometheus::Gauge*, std::less<>> queue_depth_;
};

}  // namespace uppzy::metrics
