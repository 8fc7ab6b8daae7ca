#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "uppzy/metrics.h"

namespace uppzy::metrics {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;
using prometheus::Registry;

// Bucket upper bounds, as they have been since the first dashboards (the +Inf bucket is implied).
const Histogram::BucketBoundaries kTimeToAnswerBuckets = {0.5, 1,  2,   5,   10,  20,  30,
                                                          45,  60, 120, 300, 600, 1800};
const Histogram::BucketBoundaries kStatusCallsBuckets = {1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30};
const Histogram::BucketBoundaries kSeenGapBuckets = {0.1, 0.25, 0.5, 1, 2, 2.5, 3, 4, 5, 7.5, 10, 20};
const Histogram::BucketBoundaries kHttpDurationBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                          0.5,   1,    2.5,   5,    10,  30};

// The error kinds a job can fail with; each gets its series at start.
constexpr ErrorKind kFailureKinds[] = {ErrorKind::kRateLimited,     ErrorKind::kServerError,
                                       ErrorKind::kNetwork,         ErrorKind::kPollTimeout,
                                       ErrorKind::kUpstreamFailed,  ErrorKind::kBadRequest,
                                       ErrorKind::kInvalidResponse, ErrorKind::kLeaseExpired};

prometheus::Family<Counter>& CounterFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
prometheus::Family<Gauge>& GaugeFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
// The one series of a family without labels of its own.
Counter& CounterSeries(Registry& r, const Labels& common, const char* name, const char* help) {
  return CounterFamily(r, name, help).Add(common);
}
Gauge& GaugeSeries(Registry& r, const Labels& common, const char* name, const char* help) {
  return GaugeFamily(r, name, help).Add(common);
}
prometheus::Family<Histogram>& HistogramFamily(Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

std::string KindLabel(ErrorKind kind) {
  return kind == ErrorKind::kNone ? "none" : std::string(ToString(kind));
}

// Common labels must not take the name of a label of ours ("le" included), so no series is ambiguous.
const Labels& Checked(const Labels& common) {
  for (const char* ours : {"state", "error_kind", "endpoint", "le"}) {
    if (common.count(ours))
      throw std::invalid_argument(std::string("common metric label is reserved: ") + ours);
  }
  return common;
}

long long Count(const Counter& c) { return std::llround(c.Value()); }

}  // namespace

WorkerMetrics::WorkerMetrics(Registry& r, const Labels& common)
    : common_(Checked(common)),
      finished_family_(
          CounterFamily(r, "uppzy_jobs_finished_total",
                        "Jobs this process finished, by final state and error_kind (none for completed).")),
      queue_depth_family_(GaugeFamily(
          r, "uppzy_queue_depth",
          "Jobs queued, submitting, polling or retrying (from uppzy.chat_job_stats, cached a few seconds).")),
      submissions_(CounterSeries(r, common, "uppzy_submissions_total",
                                 "Submissions sent to Uppzy (POST chat/async).")),
      polls_(CounterSeries(r, common, "uppzy_polls_total", "Status requests sent to Uppzy.")),
      retries_(CounterSeries(r, common, "uppzy_retries_total",
                             "Attempts that failed in a retryable way and were rescheduled.")),
      fenced_writes_(CounterSeries(r, common, "uppzy_fenced_writes_total",
                                   "Row writes refused by the fencing guard (another worker held the row).")),
      rejected_writes_(CounterSeries(r, common, "uppzy_rejected_writes_total",
                                     "Row writes the database refused for good; the row was failed with "
                                     "error_kind invalid_response.")),
      rescued_(CounterSeries(r, common, "uppzy_rescued_total",
                             "Submitting rows whose lease expired, rescued by this worker.")),
      in_flight_(
          GaugeSeries(r, common, "uppzy_jobs_in_flight", "Jobs this worker holds (submitting or polling).")),
      breaker_state_(GaugeSeries(r, common, "uppzy_circuit_breaker_state",
                                 "Circuit breaker towards Uppzy: 0 closed, 1 open, 2 half-open.")),
      poll_timeouts_(CounterSeries(r, common, "uppzy_poll_timeouts_total",
                                   "Attempts whose poll deadline passed (then retried or failed).")),
      time_to_answer_(
          HistogramFamily(
              r, "uppzy_time_to_answer_seconds",
              "Seconds from a job's INSERT (created_at) to its stored answer, completed jobs only.")
              .Add(common, kTimeToAnswerBuckets)),
      oldest_queued_age_(GaugeSeries(
          r, common, "uppzy_oldest_queued_age_seconds",
          "Age (now - created_at) of the oldest queued job, 0 when none (from the database, cached).")),
      open_incidents_(GaugeSeries(r, common, "uppzy_open_incidents",
                                  "Open 401/403 configuration incidents (from the database, cached).")),
      database_up_(GaugeSeries(r, common, "uppzy_database_up",
                               "1 when the last refresh of the database gauges reached the database.")),
      http_waiting_(GaugeSeries(
          r, common, "uppzy_http_requests_waiting",
          "Requests due to be sent to Uppzy that wait for a free connection (or HTTP/2 stream).")),
      http_connection_wait_(
          CounterSeries(r, common, "uppzy_http_connection_wait_seconds_total",
                        "Seconds requests spent queued in the client for a connection to Uppzy.")),
      http_duration_family_(HistogramFamily(r, "uppzy_http_request_duration_seconds",
                                            "Duration of one exchange with Uppzy, by endpoint.")),
      status_calls_family_(HistogramFamily(r, "uppzy_status_calls_per_answer",
                                           "Status calls a completed job needed, by site.")),
      seen_gap_family_(
          HistogramFamily(r, "uppzy_answer_seen_gap_seconds",
                          "Seconds between the last poll that found the answer not ready and the poll that "
                          "found it, by site: "
                          "the most the answer waited (its ready-to-stored delay lies between 0 and this).")),
      plan_calls_family_(GaugeFamily(r, "uppzy_poll_plan_expected_calls",
                                     "Status calls per job the site's adaptive poll plan expects (0 while it "
                                     "polls on the fixed tick).")),
      plan_delay_family_(
          GaugeFamily(r, "uppzy_poll_plan_expected_delay_seconds",
                      "Mean ready-to-stored delay the site's adaptive poll plan expects (0 while "
                      "it polls on the fixed tick).")),
      budget_statements_(
          CounterSeries(r, common, "uppzy_budget_statements_total",
                        "Statements run on the shared request budget (grants and 429 blocks).")),
      tokens_granted_family_(CounterFamily(r, "uppzy_budget_tokens_granted_total",
                                           "Request tokens this worker took from a site's shared budget.")),
      rate_limited_family_(CounterFamily(r, "uppzy_rate_limited_total", "429 answers from Uppzy, by site.")),
      site_rate_family_(GaugeFamily(r, "uppzy_site_effective_rate",
                                    "Requests per second a site's shared budget allows now (its limit x what "
                                    "429s taught); 0: no limit.")),
      site_blocked_family_(GaugeFamily(r, "uppzy_site_blocked",
                                       "1 while a 429's Retry-After (or back-off) blocks the site's calls.")),
      waiting_tokens_family_(
          GaugeFamily(r, "uppzy_calls_waiting_for_tokens",
                      "Calls to Uppzy due now that wait for a token of the site's budget.")),
      site_jobs_family_(
          GaugeFamily(r, "uppzy_site_jobs",
                      "Unfinished jobs of a site by state (uppzy.site_queues, cached a few "
                      "seconds); the default site's NULL-site jobs count under UPPZY_SITE_ID.")),
      site_incidents_family_(GaugeFamily(r, "uppzy_site_open_incidents",
                                         "Open 401/403 incidents naming the site (cached a few seconds).")) {
  size_t i = 0;
  for (std::string_view endpoint : {"submit", "status", "feedback", "session_close"}) {
    http_duration_[i++] = {endpoint, &http_duration_family_.Add(With({{"endpoint", std::string(endpoint)}}),
                                                                kHttpDurationBuckets)};
  }
  Finished(JobState::kCompleted, ErrorKind::kNone);
  for (ErrorKind k : kFailureKinds) Finished(JobState::kFailed, k);
  Finished(JobState::kCancelled, ErrorKind::kCancelled);
  for (const char* state : {"queued", "submitting", "polling", "retrying"}) SetQueueDepth(state, 0);
}

Labels WorkerMetrics::With(std::initializer_list<std::pair<const std::string, std::string>> labels) const {
  Labels out = common_;
  out.insert(labels);
  return out;
}

Counter& WorkerMetrics::Finished(JobState state, ErrorKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  Counter*& c = finished_[{state, kind}];
  if (!c)
    c = &finished_family_.Add(
        With({{"state", std::string(ToString(state))}, {"error_kind", KindLabel(kind)}}));
  return *c;
}

void WorkerMetrics::Submitted() { submissions_.Increment(); }
void WorkerMetrics::Polled() { polls_.Increment(); }

void WorkerMetrics::JobFinished(JobState state, ErrorKind kind) {
  Finished(state, kind).Increment();
  if (kind == ErrorKind::kPollTimeout) poll_timeouts_.Increment();
}

void WorkerMetrics::AttemptRetried(ErrorKind kind) {
  retries_.Increment();
  if (kind == ErrorKind::kPollTimeout) poll_timeouts_.Increment();
}

void WorkerMetrics::Answered(TimePoint created_at, TimePoint now) {
  if (created_at.time_since_epoch().count() == 0) return;  // unknown
  time_to_answer_.Observe(std::chrono::duration<double>(now - created_at).count());
}

void WorkerMetrics::AnswerSeen(const std::string& site, int status_calls, double gap_seconds) {
  // Family::Add returns the existing series for labels it has seen (under the family's mutex).
  status_calls_family_.Add(With({{"site", site}}), kStatusCallsBuckets).Observe(status_calls);
  seen_gap_family_.Add(With({{"site", site}}), kSeenGapBuckets).Observe(std::max(0.0, gap_seconds));
}

void WorkerMetrics::SetPollPlan(const std::string& site, double expected_calls,
                                double expected_delay_seconds) {
  plan_calls_family_.Add(With({{"site", site}})).Set(expected_calls);
  plan_delay_family_.Add(With({{"site", site}})).Set(expected_delay_seconds);
}

void WorkerMetrics::BudgetStatement() { budget_statements_.Increment(); }
void WorkerMetrics::TokensGranted(const std::string& site, int tokens) {
  if (tokens > 0) tokens_granted_family_.Add(With({{"site", site}})).Increment(tokens);
}
void WorkerMetrics::RateLimited(const std::string& site) {
  rate_limited_family_.Add(With({{"site", site}})).Increment();
}
void WorkerMetrics::SetSiteBudget(const std::string& site, double rate_per_s, bool blocked) {
  site_rate_family_.Add(With({{"site", site}})).Set(rate_per_s);
  site_blocked_family_.Add(With({{"site", site}})).Set(blocked ? 1 : 0);
}
void WorkerMetrics::SetCallsWaitingForTokens(const std::string& site, int calls) {
  waiting_tokens_family_.Add(With({{"site", site}})).Set(calls);
}
void WorkerMetrics::SetSiteJobs(const std::string& site, std::string_view state, long long jobs) {
  site_jobs_family_.Add(With({{"site", site}, {"state", std::string(state)}})).Set(static_cast<double>(jobs));
}
void WorkerMetrics::SetSiteOpenIncidents(const std::string& site, long long incidents) {
  site_incidents_family_.Add(With({{"site", site}})).Set(static_cast<double>(incidents));
}
long long WorkerMetrics::budget_statements() const { return Count(budget_statements_); }

void WorkerMetrics::HttpExchange(std::string_view endpoint, std::chrono::milliseconds duration) {
  const double seconds = static_cast<double>(duration.count()) / 1000.0;
  for (const auto& [name, histogram] : http_duration_) {
    if (name == endpoint) {
      histogram->Observe(seconds);
      return;
    }
  }
  http_duration_family_.Add(With({{"endpoint", std::string(endpoint)}}), kHttpDurationBuckets)
      .Observe(seconds);
}

void WorkerMetrics::SetInFlight(size_t jobs) { in_flight_.Set(static_cast<double>(jobs)); }
void WorkerMetrics::SetBreakerState(BreakerState state) { breaker_state_.Set(static_cast<double>(state)); }
void WorkerMetrics::SetHttpWaiting(size_t requests) { http_waiting_.Set(static_cast<double>(requests)); }
void WorkerMetrics::AddConnectionWait(double seconds) {
  http_connection_wait_.Increment(std::max(0.0, seconds));
}

void WorkerMetrics::WritesFenced(size_t writes) { fenced_writes_.Increment(static_cast<double>(writes)); }
void WorkerMetrics::WriteRejected() { rejected_writes_.Increment(); }
void WorkerMetrics::Rescued(int rows) { rescued_.Increment(std::max(0, rows)); }

void WorkerMetrics::SetQueueDepth(std::string_view state, long long jobs) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queue_depth_.find(state);
  if (it == queue_depth_.end()) {
    Gauge* g = &queue_depth_family_.Add(With({{"state", std::string(state)}}));
    it = queue_depth_.emplace(std::string(state), g).first;
  }
  it->second->Set(static_cast<double>(jobs));
}

void WorkerMetrics::SetOldestQueuedAge(double seconds) { oldest_queued_age_.Set(seconds); }
void WorkerMetrics::SetOpenIncidents(long long incidents) {
  open_incidents_.Set(static_cast<double>(incidents));
}
void WorkerMetrics::SetDatabaseUp(bool up) { database_up_.Set(up ? 1 : 0); }

long long WorkerMetrics::submissions() const { return Count(submissions_); }
long long WorkerMetrics::polls() const { return Count(polls_); }
long long WorkerMetrics::retries() const { return Count(retries_); }
long long WorkerMetrics::completed() const { return finished(JobState::kCompleted, ErrorKind::kNone); }

long long WorkerMetrics::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  long long n = 0;
  for (const auto& [key, counter] : finished_) {
    if (key.first == JobState::kFailed) n += Count(*counter);
  }
  return n;
}

long long WorkerMetrics::finished(JobState state, ErrorKind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = finished_.find({state, kind});
  return it == finished_.end() ? 0 : Count(*it->second);
}

long long WorkerMetrics::poll_timeouts() const { return Count(poll_timeouts_); }
long long WorkerMetrics::fenced_writes() const { return Count(fenced_writes_); }
long long WorkerMetrics::rejected_writes() const { return Count(rejected_writes_); }
long long WorkerMetrics::rescued() const { return Count(rescued_); }
long long WorkerMetrics::in_flight() const { return std::llround(in_flight_.Value()); }
BreakerState WorkerMetrics::breaker_state() const {
  return static_cast<BreakerState>(std::lround(breaker_state_.Value()));
}

double WorkerMetrics::queue_depth(std::string_view state) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queue_depth_.find(state);
  return it == queue_depth_.end() ? std::numeric_limits<double>::quiet_NaN() : it->second->Value();
}

double WorkerMetrics::oldest_queued_age() const { return oldest_queued_age_.Value(); }
long long WorkerMetrics::open_incidents() const { return std::llround(open_incidents_.Value()); }
bool WorkerMetrics::database_up() const { return database_up_.Value() == 1; }
double WorkerMetrics::http_waiting() const { return http_waiting_.Value(); }

}  // namespace uppzy::metrics
