#include "uppzy/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "uppzy/worker.h"

namespace uppzy::metrics {
namespace {

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} (with `extra` appended, e.g. le="0.5"); "" when there is no label at all.
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra = {}) {
  if (names.empty() && extra.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra.empty()) out += (names.empty() ? "" : ",") + extra;
  return out + "}";
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, ptr) : std::string("NaN");
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(total);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

FamilyBase::FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), type_(type), label_names_(std::move(label_names)) {}

void FamilyBase::Render(std::string* out) const {
  *out += "# HELP " + name_ + " " + EscapeHelp(help_) + "\n";
  *out += "# TYPE " + name_ + " " + TypeName(type_) + "\n";
  RenderChildren(out);
}

template <typename M>
M& Family<M>::With(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": expected " + std::to_string(label_names_.size()) +
                                " label values, got " + std::to_string(label_values.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& child = children_[label_values];
  if (!child) {
    if constexpr (std::is_same_v<M, Histogram>) {
      child = std::make_unique<Histogram>(bounds_);
    } else {
      child = std::make_unique<M>();
    }
  }
  return *child;
}

template <typename M>
void Family<M>::RenderChildren(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, child] : children_) {
    if constexpr (std::is_same_v<M, Histogram>) {
      const Histogram::Snapshot s = child->Read();
      for (size_t i = 0; i < s.cumulative.size(); ++i) {
        const std::string le =
            "le=\"" + (i < s.upper_bounds.size() ? FormatValue(s.upper_bounds[i]) : std::string("+Inf")) +
            "\"";
        *out += name_ + "_bucket" + LabelSet(label_names_, values, le) + " " +
                std::to_string(s.cumulative[i]) + "\n";
      }
      *out += name_ + "_sum" + LabelSet(label_names_, values) + " " + FormatValue(s.sum) + "\n";
      *out += name_ + "_count" + LabelSet(label_names_, values) + " " + std::to_string(s.cumulative.back()) +
              "\n";
    } else {
      *out += name_ + LabelSet(label_names_, values) + " " + FormatValue(child->Value()) + "\n";
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

FamilyBase* Registry::Find(const std::string& name, Type type, const std::vector<std::string>& label_names) {
  if (!ValidName(name, true)) throw std::logic_error("invalid metric name: " + name);
  for (const auto& l : label_names) {
    if (!ValidName(l, false) || l.rfind("__", 0) == 0 || l == "le") {
      throw std::logic_error("invalid label name for " + name + ": " + l);
    }
  }
  for (const auto& f : families_) {
    if (f->name() != name) continue;
    if (f->type() != type || f->label_names() != label_names) {
      throw std::logic_error("metric " + name + " is already registered with another type or labels");
    }
    return f.get();
  }
  return nullptr;
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto* f = Find(name, Type::kCounter, label_names)) return static_cast<Family<Counter>&>(*f);
  families_.push_back(std::make_unique<Family<Counter>>(name, help, Type::kCounter, std::move(label_names)));
  return static_cast<Family<Counter>&>(*families_.back());
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto* f = Find(name, Type::kGauge, label_names)) return static_cast<Family<Gauge>&>(*f);
  families_.push_back(std::make_unique<Family<Gauge>>(name, help, Type::kGauge, std::move(label_names)));
  return static_cast<Family<Gauge>&>(*families_.back());
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names,
                                          std::vector<double> upper_bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto* f = Find(name, Type::kHistogram, label_names)) return static_cast<Family<Histogram>&>(*f);
  auto family = std::make_unique<Family<Histogram>>(name, help, Type::kHistogram, std::move(label_names));
  std::sort(upper_bounds.begin(), upper_bounds.end());
  family->bounds_ = std::move(upper_bounds);
  families_.push_back(std::move(family));
  return static_cast<Family<Histogram>&>(*families_.back());
}

std::string Registry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) f->Render(&out);
  return out;
}

Registry& Default() {
  static Registry* registry = new Registry();  // never destroyed: threads may record during exit
  return *registry;
}

namespace {

WorkerMetrics* MakeWorkerMetrics() {
  Registry& r = Default();
  auto* m = new WorkerMetrics{
      r.AddCounter("uppzy_jobs_finished_total",
                   "Jobs this process finished, by final state and error_kind (none for completed).",
                   {"state", "error_kind"}),
      r.AddCounter("uppzy_poll_timeouts_total",
                   "Attempts whose poll deadline passed (then retried or failed).")
          .Get(),
      r.AddHistogram("uppzy_time_to_answer_seconds",
                     "Seconds from a job's INSERT (created_at) to its stored answer, completed jobs only.",
                     {}, {0.5, 1, 2, 5, 10, 20, 30, 45, 60, 120, 300, 600, 1800})
          .Get(),
      r.AddHistogram("uppzy_http_request_duration_seconds",
                     "Duration of one exchange with Uppzy, by endpoint.", {"endpoint"},
                     {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      r.AddGauge(
          "uppzy_queue_depth",
          "Jobs queued, submitting, polling or retrying (from uppzy.chat_job_stats, cached a few seconds).",
          {"state"}),
      r.AddGauge("uppzy_oldest_queued_age_seconds",
                 "Age (now - created_at) of the oldest queued job, 0 when none (from the database, cached).")
          .Get(),
      r.AddGauge("uppzy_open_incidents", "Open 401/403 configuration incidents (from the database, cached).")
          .Get(),
      r.AddGauge("uppzy_database_up", "1 when the last refresh of the database gauges reached the database.")
          .Get(),
      r.AddGauge("uppzy_http_requests_waiting",
                 "Requests due to be sent to Uppzy that wait for a free connection (or HTTP/2 stream).")
          .Get(),
      r.AddCounter("uppzy_http_connection_wait_seconds_total",
                   "Seconds requests spent queued in the client for a connection to Uppzy.")
          .Get(),
  };
  // Every series exists from the start, so rate() and absent() behave before the first event.
  m->finished.With({"completed", "none"});
  for (ErrorKind k : {ErrorKind::kRateLimited, ErrorKind::kServerError, ErrorKind::kNetwork,
                      ErrorKind::kPollTimeout, ErrorKind::kUpstreamFailed, ErrorKind::kBadRequest,
                      ErrorKind::kInvalidResponse, ErrorKind::kLeaseExpired}) {
    m->finished.With({"failed", std::string(ToString(k))});
  }
  m->finished.With({"cancelled", "cancelled"});
  for (const char* endpoint : {"submit", "status"}) m->http_duration.With({endpoint});
  for (const char* state : {"queued", "submitting", "polling", "retrying"}) m->queue_depth.With({state});
  return m;
}

}  // namespace

WorkerMetrics& WorkerMetrics::Get() {
  static WorkerMetrics* metrics = MakeWorkerMetrics();
  return *metrics;
}

void WorkerMetrics::JobFinished(JobState state, ErrorKind kind) {
  std::string k = kind == ErrorKind::kNone ? "none" : std::string(ToString(kind));
  finished.With({std::string(ToString(state)), std::move(k)}).Inc();
  if (kind == ErrorKind::kPollTimeout) poll_timeouts.Inc();
}

void WorkerMetrics::AttemptRetried(ErrorKind kind) {
  if (kind == ErrorKind::kPollTimeout) poll_timeouts.Inc();
}

void WorkerMetrics::HttpExchange(std::string_view endpoint, std::chrono::milliseconds duration) {
  http_duration.With({std::string(endpoint)}).Observe(static_cast<double>(duration.count()) / 1000.0);
}

void WorkerMetrics::Answered(TimePoint created_at, TimePoint now) {
  if (created_at.time_since_epoch().count() == 0) return;  // unknown
  time_to_answer.Observe(std::chrono::duration<double>(now - created_at).count());
}

std::string RenderWorkerCounters(const WorkerCounters& c) {
  std::string out;
  auto add = [&out](const char* name, const char* type, const char* help, long long v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           std::to_string(v) + "\n";
  };
  add("uppzy_submissions_total", "counter", "Submissions sent to Uppzy (POST chat/async).",
      c.submissions.load());
  add("uppzy_polls_total", "counter", "Status requests sent to Uppzy.", c.polls.load());
  add("uppzy_retries_total", "counter", "Attempts that failed in a retryable way and were rescheduled.",
      c.retries.load());
  add("uppzy_fenced_writes_total", "counter",
      "Row writes refused by the fencing guard (another worker held the row).", c.fenced_writes.load());
  add("uppzy_rejected_writes_total", "counter",
      "Row writes the database refused for good; the row was failed with error_kind invalid_response.",
      c.rejected_writes.load());
  add("uppzy_rescued_total", "counter", "Submitting rows whose lease expired, rescued by this worker.",
      c.rescued.load());
  add("uppzy_jobs_in_flight", "gauge", "Jobs this worker holds (submitting or polling).", c.in_flight.load());
  add("uppzy_circuit_breaker_state", "gauge", "Circuit breaker towards Uppzy: 0 closed, 1 open, 2 half-open.",
      static_cast<long long>(c.breaker_state.load()));
  return out;
}

}  // namespace uppzy::metrics
