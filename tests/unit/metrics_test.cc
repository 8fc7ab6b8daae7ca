// The metrics registry: values, labels, histograms, escaping, and text that Prometheus's own parser
// (python3-prometheus-client) accepts.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "support/prom.h"
#include "uppzy/metrics.h"
#include "uppzy/worker.h"

namespace uppzy {
namespace {

using metrics::Registry;

TEST(Metrics, CountersGaugesAndLabels) {
  Registry r;
  auto& c = r.AddCounter("t_requests_total", "Requests.", {"code"});
  c.With({"200"}).Inc();
  c.With({"200"}).Inc(2);
  c.With({"500"}).Inc();
  r.AddGauge("t_temperature", "Now.").Get().Set(-3.5);
  const std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE t_requests_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_requests_total{code=\"200\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_requests_total{code=\"500\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_temperature -3.5\n"), std::string::npos) << text;
  EXPECT_THROW(c.With({}), std::invalid_argument);
}

TEST(Metrics, RegisteringTwiceReturnsTheSameFamilyButAnotherTypeIsRefused) {
  Registry r;
  auto& a = r.AddCounter("t_x_total", "X.", {"k"});
  EXPECT_EQ(&a, &r.AddCounter("t_x_total", "X.", {"k"}));
  EXPECT_THROW(r.AddGauge("t_x_total", "X."), std::logic_error);
  EXPECT_THROW(r.AddCounter("t_x_total", "X.", {"other"}), std::logic_error);
  EXPECT_THROW(r.AddCounter("bad name", "X."), std::logic_error);
  EXPECT_THROW(r.AddCounter("t_y_total", "Y.", {"le"}), std::logic_error);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  auto& h = r.AddHistogram("t_seconds", "Latency.", {"endpoint"}, {0.1, 1, 10}).With({"submit"});
  for (double v : {0.05, 0.1, 0.5, 2.0, 50.0}) h.Observe(v);
  const auto s = h.Read();
  ASSERT_EQ(s.cumulative.size(), 4u);
  EXPECT_EQ(s.cumulative[0], 2u);  // <= 0.1 (le is inclusive)
  EXPECT_EQ(s.cumulative[1], 3u);
  EXPECT_EQ(s.cumulative[2], 4u);
  EXPECT_EQ(s.cumulative[3], 5u);
  EXPECT_DOUBLE_EQ(s.sum, 52.65);
  const std::string text = r.Render();
  EXPECT_NE(text.find("t_seconds_bucket{endpoint=\"submit\",le=\"+Inf\"} 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("t_seconds_count{endpoint=\"submit\"} 5\n"), std::string::npos) << text;
}

TEST(Metrics, ConcurrentRecordingLosesNothing) {
  Registry r;
  auto& c = r.AddCounter("t_hits_total", "Hits.").Get();
  auto& h = r.AddHistogram("t_h", "H.", {}, {1}).Get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc();
        h.Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), 40000);
  EXPECT_EQ(h.Read().cumulative.back(), 40000u);
}

TEST(Metrics, ValuesAndLabelsAreEscaped) {
  EXPECT_EQ(metrics::FormatValue(3), "3");
  EXPECT_EQ(metrics::FormatValue(0.25), "0.25");
  EXPECT_EQ(metrics::FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(metrics::FormatValue(NAN), "NaN");
  EXPECT_EQ(metrics::EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(Metrics, TheRealParserAcceptsTheWorkerExposition) {
  auto& m = metrics::WorkerMetrics::Get();
  m.JobFinished(JobState::kFailed, ErrorKind::kPollTimeout);
  m.JobFinished(JobState::kCompleted, ErrorKind::kNone);
  m.AttemptRetried(ErrorKind::kPollTimeout);
  m.HttpExchange("submit", std::chrono::milliseconds(120));
  m.Answered(Clock::now() - std::chrono::seconds(3), Clock::now());
  m.queue_depth.With({"queued"}).Set(7);
  // A label value that needs escaping must survive the round trip.
  metrics::Default()
      .AddCounter("uppzy_test_escapes_total", "Escapes \\ and\nnewlines.", {"v"})
      .With({"a\"b\\c\nd"})
      .Inc();
  WorkerCounters counters;
  counters.submissions = 5;
  counters.breaker_state = BreakerState::kHalfOpen;
  const std::string text = metrics::RenderWorkerCounters(counters) + metrics::Default().Render();

  std::vector<test::PromSample> samples;
  std::string error;
  ASSERT_TRUE(test::ParsePrometheus(text, &samples, &error)) << error << "\n" << text;
  EXPECT_EQ(test::SampleValue(samples, "uppzy_submissions_total"), 5);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_circuit_breaker_state"), 2);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_jobs_finished_total",
                              R"({"error_kind":"poll_timeout","state":"failed"})"),
            1);
  EXPECT_EQ(
      test::SampleValue(samples, "uppzy_jobs_finished_total", R"({"error_kind":"none","state":"completed"})"),
      1);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_poll_timeouts_total"), 2);
  EXPECT_EQ(
      test::SampleValue(samples, "uppzy_http_request_duration_seconds_count", R"({"endpoint":"submit"})"), 1);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_time_to_answer_seconds_bucket", R"({"le":"5"})"), 1);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_queue_depth", R"({"state":"queued"})"), 7);
  EXPECT_EQ(test::SampleValue(samples, "uppzy_test_escapes_total", R"({"v":"a\"b\\c\nd"})"), 1);
}

}  // namespace
}  // namespace uppzy
