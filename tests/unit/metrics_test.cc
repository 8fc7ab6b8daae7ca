// The worker's metrics on prometheus-cpp: every series from the start, each event counted once and read
// back from the same series, histogram bounds as they were, common labels (a site) sharing one registry,
// and an exposition that Prometheus's own parser (python3-prometheus-client) accepts.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/prom.h"
#include "uppzy/metrics.h"

namespace uppzy {
namespace {

using metrics::WorkerMetrics;

std::vector<test::PromSample> Parse(const prometheus::Registry& registry) {
  const std::string text = metrics::Exposition(registry);
  std::vector<test::PromSample> samples;
  std::string error;
  EXPECT_TRUE(test::ParsePrometheus(text, &samples, &error)) << error << "\n" << text;
  return samples;
}

TEST(WorkerMetrics, EverySeriesExistsFromTheStart) {
  prometheus::Registry registry;
  WorkerMetrics m(registry);
  const auto s = Parse(registry);
  for (const char* name :
       {"uppzy_submissions_total", "uppzy_polls_total", "uppzy_retries_total", "uppzy_fenced_writes_total",
        "uppzy_rejected_writes_total", "uppzy_rescued_total", "uppzy_jobs_in_flight",
        "uppzy_circuit_breaker_state", "uppzy_poll_timeouts_total", "uppzy_oldest_queued_age_seconds",
        "uppzy_open_incidents", "uppzy_database_up", "uppzy_http_requests_waiting",
        "uppzy_http_connection_wait_seconds_total", "uppzy_time_to_answer_seconds_count"}) {
    EXPECT_EQ(test::SampleValue(s, name), 0) << name;
  }
  EXPECT_EQ(test::SampleValue(s, "uppzy_jobs_finished_total", R"({"error_kind":"none","state":"completed"})"),
            0);
  EXPECT_EQ(
      test::SampleValue(s, "uppzy_jobs_finished_total", R"({"error_kind":"lease_expired","state":"failed"})"),
      0);
  EXPECT_EQ(test::SampleValue(s, "uppzy_queue_depth", R"({"state":"retrying"})"), 0);
  for (const char* endpoint : {"submit", "status", "feedback", "session_close"}) {
    EXPECT_EQ(test::SampleValue(s, "uppzy_http_request_duration_seconds_count",
                                std::string(R"({"endpoint":")") + endpoint + R"("})"),
              0)
        << endpoint;
  }
}

TEST(WorkerMetrics, EachEventIsCountedOnceAndReadBackFromTheSameSeries) {
  prometheus::Registry registry;
  WorkerMetrics m(registry);
  m.Submitted();
  m.Submitted();
  m.Polled();
  m.JobFinished(JobState::kFailed, ErrorKind::kPollTimeout);
  m.JobFinished(JobState::kFailed, ErrorKind::kBadRequest);
  m.JobFinished(JobState::kCompleted, ErrorKind::kNone);
  m.JobFinished(JobState::kCancelled, ErrorKind::kCancelled);
  m.AttemptRetried(ErrorKind::kPollTimeout);
  m.AttemptRetried(ErrorKind::kServerError);
  m.WritesFenced(3);
  m.WriteRejected();
  m.Rescued(2);
  m.SetInFlight(7);
  m.SetBreakerState(BreakerState::kHalfOpen);
  m.SetQueueDepth("queued", 5);

  EXPECT_EQ(m.submissions(), 2);
  EXPECT_EQ(m.polls(), 1);
  EXPECT_EQ(m.completed(), 1);
  EXPECT_EQ(m.failed(), 2);
  EXPECT_EQ(m.retries(), 2);
  EXPECT_EQ(m.poll_timeouts(), 2);  // one failed, one retried
  EXPECT_EQ(m.fenced_writes(), 3);
  EXPECT_EQ(m.rejected_writes(), 1);
  EXPECT_EQ(m.rescued(), 2);
  EXPECT_EQ(m.in_flight(), 7);
  EXPECT_EQ(m.breaker_state(), BreakerState::kHalfOpen);
  EXPECT_EQ(m.queue_depth("queued"), 5);

  const auto s = Parse(registry);
  EXPECT_EQ(test::SampleValue(s, "uppzy_submissions_total"), 2);
  EXPECT_EQ(test::SampleValue(s, "uppzy_retries_total"), 2);
  EXPECT_EQ(test::SampleValue(s, "uppzy_poll_timeouts_total"), 2);
  EXPECT_EQ(
      test::SampleValue(s, "uppzy_jobs_finished_total", R"({"error_kind":"poll_timeout","state":"failed"})"),
      1);
  EXPECT_EQ(
      test::SampleValue(s, "uppzy_jobs_finished_total", R"({"error_kind":"cancelled","state":"cancelled"})"),
      1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_fenced_writes_total"), 3);
  EXPECT_EQ(test::SampleValue(s, "uppzy_circuit_breaker_state"), 2);
  EXPECT_EQ(test::SampleValue(s, "uppzy_jobs_in_flight"), 7);
  EXPECT_EQ(test::SampleValue(s, "uppzy_queue_depth", R"({"state":"queued"})"), 5);
}

TEST(WorkerMetrics, HistogramBoundsAreTheOnesDashboardsUse) {
  prometheus::Registry registry;
  WorkerMetrics m(registry);
  m.Answered(Clock::now() - std::chrono::seconds(3), Clock::now());
  m.Answered(TimePoint{}, Clock::now());  // created_at unknown: not observed
  m.HttpExchange("submit", std::chrono::milliseconds(120));
  m.HttpExchange("status", std::chrono::milliseconds(5));  // le is inclusive
  const auto s = Parse(registry);
  EXPECT_EQ(test::SampleValue(s, "uppzy_time_to_answer_seconds_count"), 1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_time_to_answer_seconds_bucket", R"({"le":"2"})"), 0);
  EXPECT_EQ(test::SampleValue(s, "uppzy_time_to_answer_seconds_bucket", R"({"le":"5"})"), 1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_time_to_answer_seconds_bucket", R"({"le":"1800"})"), 1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_http_request_duration_seconds_bucket",
                              R"({"endpoint":"submit","le":"0.1"})"),
            0);
  EXPECT_EQ(test::SampleValue(s, "uppzy_http_request_duration_seconds_bucket",
                              R"({"endpoint":"submit","le":"0.25"})"),
            1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_http_request_duration_seconds_bucket",
                              R"({"endpoint":"status","le":"0.005"})"),
            1);
  EXPECT_DOUBLE_EQ(
      test::SampleValue(s, "uppzy_http_request_duration_seconds_sum", R"({"endpoint":"submit"})"), 0.12);
}

TEST(WorkerMetrics, CommonLabelsLetSitesShareOneRegistry) {
  prometheus::Registry registry;
  WorkerMetrics a(registry, {{"site", "a"}});
  WorkerMetrics b(registry, {{"site", "b"}});
  a.Submitted();
  b.JobFinished(JobState::kFailed, ErrorKind::kNetwork);
  EXPECT_EQ(a.submissions(), 1);
  EXPECT_EQ(b.submissions(), 0);
  EXPECT_EQ(a.failed(), 0);
  EXPECT_EQ(b.failed(), 1);
  const std::string text = metrics::Exposition(registry);
  size_t types = 0;
  for (size_t at = 0; (at = text.find("# TYPE uppzy_submissions_total ", at)) != std::string::npos; ++at)
    ++types;
  EXPECT_EQ(types, 1u) << "one family, two series\n" << text;
  const auto s = Parse(registry);  // the parser refuses a family that appears twice
  EXPECT_EQ(test::SampleValue(s, "uppzy_submissions_total", R"({"site":"a"})"), 1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_submissions_total", R"({"site":"b"})"), 0);
  EXPECT_EQ(test::SampleValue(s, "uppzy_jobs_finished_total",
                              R"({"error_kind":"network","site":"b","state":"failed"})"),
            1);
  EXPECT_EQ(test::SampleValue(s, "uppzy_http_request_duration_seconds_bucket",
                              R"({"endpoint":"submit","le":"+Inf","site":"a"})"),
            0);
}

TEST(WorkerMetrics, ConflictsAreRefusedAtConstruction) {
  prometheus::Registry taken;
  prometheus::BuildGauge().Name("uppzy_submissions_total").Help("Not a counter.").Register(taken);
  EXPECT_THROW(WorkerMetrics{taken}, std::invalid_argument);
  prometheus::Registry registry;
  EXPECT_THROW((WorkerMetrics{registry, {{"state", "x"}}}), std::invalid_argument);
  EXPECT_THROW((WorkerMetrics{registry, {{"bad label", "x"}}}), std::invalid_argument);
}

TEST(WorkerMetrics, LabelValuesAreEscaped) {
  prometheus::Registry registry;
  WorkerMetrics m(registry);
  m.SetQueueDepth("a\"b\\c\nd", 1);
  const auto s = Parse(registry);
  EXPECT_EQ(test::SampleValue(s, "uppzy_queue_depth", R"({"state":"a\"b\\c\nd"})"), 1);
}

}  // namespace
}  // namespace uppzy
