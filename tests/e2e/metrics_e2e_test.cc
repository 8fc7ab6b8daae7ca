// GET /metrics, /readyz and /healthz of a real worker (with the mock and PostgreSQL), the exposition
// checked by Prometheus's own parser (Debian's python3-prometheus-client).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support/prom.h"
#include "support/support.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::QueryInt;

class MetricsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    mock_ = std::make_unique<test::MockProcess>(std::vector<std::string>{"--ready-after-ms", "50"});
  }

  void StartWorker() {
    auto env = test::WorkerEnv(db_, *mock_);
    env["UPPZY_STATS_INTERVAL_MS"] = "200";
    env["UPPZY_POLL_TIMEOUT_MS"] = "1000";
    worker_ = std::make_unique<test::Process>(std::vector<std::string>{UPPZY_WORKER_BIN, "run"}, env);
    port_ = test::HttpPortFromLog(*worker_, 10s);
    ASSERT_FALSE(port_.empty()) << worker_->Log();
  }

  long Get(const std::string& path, std::string* body) {
    return test::HttpGet("http://127.0.0.1:" + port_ + path, body);
  }

  std::vector<test::PromSample> Scrape() {
    std::string body;
    EXPECT_EQ(Get("/metrics", &body), 200);
    std::vector<test::PromSample> samples;
    std::string error;
    EXPECT_TRUE(test::ParsePrometheus(body, &samples, &error)) << error << "\n" << body;
    return samples;
  }

  long long Enqueue(const std::string& message, int max_attempts = 3) {
    return QueryInt(db_, "INSERT INTO uppzy.chat_jobs (session_id, message, max_attempts) VALUES ('s', '" +
                             message + "', " + std::to_string(max_attempts) + ") RETURNING id");
  }

  std::string db_;
  std::unique_ptr<test::MockProcess> mock_;
  std::unique_ptr<test::Process> worker_;
  std::string port_;
};

TEST_F(MetricsE2E, MetricsParseAndCountWhatHappened) {
  Enqueue("plain question");
  Enqueue("q mock.submit=429,ok");
  Enqueue("q mock.submit=400");
  Enqueue("slow mock.ready=60000", 1);
  StartWorker();
  ASSERT_TRUE(test::WaitFor(
      [&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE finished_at IS NULL") == 0; },
      30s))
      << worker_->Log();
  // A job that waits (run_at in an hour) shows in the queue gauges once the cache refreshes.
  test::Exec(db_,
             "INSERT INTO uppzy.chat_jobs (session_id, message, run_at, created_at) VALUES ('s', 'later', "
             "now() + interval '1 hour', now() - interval '42 seconds')");
  std::vector<test::PromSample> m;
  ASSERT_TRUE(test::WaitFor(
      [&] {
        m = Scrape();
        return test::SampleValue(m, "uppzy_queue_depth", R"({"state":"queued"})") == 1 &&
               test::SampleValue(m, "uppzy_site_jobs", R"({"site":"test-site","state":"queued"})") == 1;
      },
      10s));

  auto v = [&](const std::string& name, const std::string& labels = "{}") {
    return test::SampleValue(m, name, labels);
  };
  EXPECT_GE(v("uppzy_submissions_total"), 5);  // 1 + 2 + 1 + 1
  EXPECT_GE(v("uppzy_polls_total"), 2);
  EXPECT_GE(v("uppzy_retries_total"), 1);
  EXPECT_EQ(v("uppzy_jobs_finished_total", R"({"error_kind":"none","state":"completed"})"), 2);
  EXPECT_EQ(v("uppzy_jobs_finished_total", R"({"error_kind":"bad_request","state":"failed"})"), 1);
  EXPECT_EQ(v("uppzy_jobs_finished_total", R"({"error_kind":"poll_timeout","state":"failed"})"), 1);
  EXPECT_EQ(v("uppzy_poll_timeouts_total"), 1);
  EXPECT_EQ(v("uppzy_time_to_answer_seconds_count"), 2);
  EXPECT_GE(v("uppzy_http_request_duration_seconds_count", R"({"endpoint":"submit"})"), 5);
  EXPECT_GE(v("uppzy_http_request_duration_seconds_count", R"({"endpoint":"status"})"), 2);
  EXPECT_EQ(v("uppzy_jobs_in_flight"), 0);
  EXPECT_EQ(v("uppzy_fenced_writes_total"), 0);
  EXPECT_EQ(v("uppzy_rescued_total"), 0);
  EXPECT_EQ(v("uppzy_circuit_breaker_state"), 0);
  EXPECT_EQ(v("uppzy_open_incidents"), 0);
  EXPECT_EQ(v("uppzy_database_up"), 1);
  EXPECT_NEAR(v("uppzy_oldest_queued_age_seconds"), 42, 10);
  EXPECT_EQ(v("uppzy_queue_depth", R"({"state":"polling"})"), 0);
  // Adaptive polling's figures, per site: the two answers each took at least one status call.
  EXPECT_EQ(v("uppzy_status_calls_per_answer_count", R"({"site":"test-site"})"), 2);
  EXPECT_GE(v("uppzy_status_calls_per_answer_sum", R"({"site":"test-site"})"), 2);
  EXPECT_EQ(v("uppzy_answer_seen_gap_seconds_count", R"({"site":"test-site"})"), 2);
  // Per site (issue 10): the site's jobs by state and its incidents; the default site (NULL-site rows)
  // under its UPPZY_SITE_ID. The budget costs nothing for a site without a limit: at most the
  // statements that ask whether it has one (about one a second while busy).
  EXPECT_EQ(v("uppzy_site_jobs", R"({"site":"test-site","state":"polling"})"), 0);
  EXPECT_EQ(v("uppzy_site_jobs", R"({"site":"test-site","state":"queued"})"), 1);
  EXPECT_EQ(v("uppzy_site_open_incidents", R"({"site":"test-site"})"), 0);
  EXPECT_LE(v("uppzy_budget_statements_total"), 30);
  // Every family is uppzy_-prefixed and typed.
  for (const auto& s : m) {
    EXPECT_EQ(s.name.rfind("uppzy_", 0), 0u) << s.name;
    EXPECT_NE(s.type, "unknown") << s.name;
  }
}

// Every family and every series a freshly started worker served on /metrics before the registry moved
// to prometheus-cpp (captured from a real worker built from f252d0c). Dashboards and alerts depend on
// them: a name, a type, a label value or a histogram bound may be added to, never changed or dropped.
struct KeptFamily {
  const char* name;
  const char* type;
};
constexpr KeptFamily kKeptFamilies[] = {
    {"uppzy_submissions_total", "counter"},
    {"uppzy_polls_total", "counter"},
    {"uppzy_retries_total", "counter"},
    {"uppzy_fenced_writes_total", "counter"},
    {"uppzy_rejected_writes_total", "counter"},
    {"uppzy_rescued_total", "counter"},
    {"uppzy_jobs_in_flight", "gauge"},
    {"uppzy_circuit_breaker_state", "gauge"},
    {"uppzy_jobs_finished_total", "counter"},
    {"uppzy_poll_timeouts_total", "counter"},
    {"uppzy_time_to_answer_seconds", "histogram"},
    {"uppzy_http_request_duration_seconds", "histogram"},
    {"uppzy_queue_depth", "gauge"},
    {"uppzy_oldest_queued_age_seconds", "gauge"},
    {"uppzy_open_incidents", "gauge"},
    {"uppzy_database_up", "gauge"},
    {"uppzy_http_requests_waiting", "gauge"},
    {"uppzy_http_connection_wait_seconds_total", "counter"},
};

// {sample name, labels as the parser prints them (sorted JSON)}.
std::vector<std::pair<std::string, std::string>> KeptSeries() {
  std::vector<std::pair<std::string, std::string>> s;
  for (const char* name : {"uppzy_submissions_total", "uppzy_polls_total", "uppzy_retries_total",
                           "uppzy_fenced_writes_total", "uppzy_rejected_writes_total", "uppzy_rescued_total",
                           "uppzy_jobs_in_flight", "uppzy_circuit_breaker_state", "uppzy_poll_timeouts_total",
                           "uppzy_oldest_queued_age_seconds", "uppzy_open_incidents", "uppzy_database_up",
                           "uppzy_http_requests_waiting", "uppzy_http_connection_wait_seconds_total"}) {
    s.emplace_back(name, "{}");
  }
  s.emplace_back("uppzy_jobs_finished_total", R"({"error_kind":"none","state":"completed"})");
  s.emplace_back("uppzy_jobs_finished_total", R"({"error_kind":"cancelled","state":"cancelled"})");
  for (const char* kind : {"bad_request", "invalid_response", "lease_expired", "network", "poll_timeout",
                           "rate_limited", "server_error", "upstream_failed"}) {
    s.emplace_back("uppzy_jobs_finished_total",
                   R"({"error_kind":")" + std::string(kind) + R"(","state":"failed"})");
  }
  for (const char* state : {"queued", "submitting", "polling", "retrying"}) {
    s.emplace_back("uppzy_queue_depth", R"({"state":")" + std::string(state) + R"("})");
  }
  // Histograms: _sum, _count and one _bucket per bound, the bounds written as they were.
  auto histogram = [&s](const std::string& name, const std::string& label,
                        std::initializer_list<const char*> bounds) {
    const std::string open = label.empty() ? "{" : "{" + label + ",";
    s.emplace_back(name + "_sum", label.empty() ? "{}" : "{" + label + "}");
    s.emplace_back(name + "_count", label.empty() ? "{}" : "{" + label + "}");
    for (const char* le : bounds) s.emplace_back(name + "_bucket", open + R"("le":")" + le + R"("})");
    s.emplace_back(name + "_bucket", open + R"("le":"+Inf"})");
  };
  histogram("uppzy_time_to_answer_seconds", "",
            {"0.5", "1", "2", "5", "10", "20", "30", "45", "60", "120", "300", "600", "1800"});
  for (const char* endpoint : {"submit", "status"}) {
    histogram("uppzy_http_request_duration_seconds", R"("endpoint":")" + std::string(endpoint) + R"(")",
              {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30"});
  }
  return s;
}

TEST_F(MetricsE2E, EveryNameTypeAndSeriesServedBeforeIsStillServed) {
  StartWorker();
  std::string body;
  ASSERT_EQ(Get("/metrics", &body), 200);
  for (const auto& f : kKeptFamilies) {
    EXPECT_NE(body.find(std::string("# TYPE ") + f.name + " " + f.type + "\n"), std::string::npos)
        << f.name << " " << f.type << "\n"
        << body;
  }
  std::vector<test::PromSample> samples;
  std::string error;
  ASSERT_TRUE(test::ParsePrometheus(body, &samples, &error)) << error << "\n" << body;
  const auto kept = KeptSeries();
  EXPECT_EQ(kept.size(), 14u + 10u + 4u + 16u + 2u * 15u);
  for (const auto& [name, labels] : kept) {
    EXPECT_FALSE(std::isnan(test::SampleValue(samples, name, labels))) << name << labels << "\n" << body;
  }
  worker_->Signal(SIGTERM);
  EXPECT_EQ(worker_->Wait(15s), 0) << worker_->Log();
}

TEST_F(MetricsE2E, ReadyzIsNotReadyWhileAnIncidentIsOpen) {
  StartWorker();
  std::string body;
  ASSERT_TRUE(test::WaitFor([&] { return Get("/readyz", &body) == 200; }, 10s)) << body << worker_->Log();
  EXPECT_EQ(nlohmann::json::parse(body)["status"], "ready");

  const auto incident =
      QueryInt(db_,
               "INSERT INTO uppzy.incidents (kind, http_status, api_key_fingerprint) VALUES "
               "('forbidden', 403, 'another-key') RETURNING id");
  ASSERT_TRUE(test::WaitFor([&] { return Get("/readyz", &body) == 503; }, 10s)) << body;
  EXPECT_EQ(std::count(body.begin(), body.end(), '\n'), 1) << "one line: " << body;
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["reason"], "incident_open");
  EXPECT_EQ(Get("/healthz", &body), 200) << "alive all the same";

  std::string out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "incidents", "resolve", std::to_string(incident)},
                             {{"DATABASE_URL", db_}}, &out),
            0)
      << out;
  EXPECT_TRUE(test::WaitFor([&] { return Get("/readyz", &body) == 200; }, 10s)) << body;
  worker_->Signal(SIGTERM);
  EXPECT_EQ(worker_->Wait(15s), 0) << worker_->Log();
}

}  // namespace
}  // namespace uppzy
