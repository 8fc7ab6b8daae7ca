// Answer times of the mock (src/mock/mock_ready.h): --ready-dist parsing, the draw as a pure function
// of the quantile, seeded sampling, and the bounded request log. Pure, no server.
#include "mock/mock_ready.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace uppzy::mock {
namespace {

using Kind = ReadyDist::Kind;

ReadyDist Lognormal(double median_ms, double sigma) {
  return {.kind = Kind::kLognormal, .median_ms = median_ms, .sigma = sigma};
}
ReadyDist Uniform(int64_t min_ms, int64_t max_ms) {
  return {.kind = Kind::kUniform, .min_ms = min_ms, .max_ms = max_ms};
}

TEST(MockReadyTest, ParsesDistributions) {
  std::string error;
  std::optional<ReadyDist> d = ParseReadyDist("lognormal:median_ms=12000,sigma=0.6", &error);
  ASSERT_TRUE(d.has_value()) << error;
  EXPECT_EQ(d->kind, Kind::kLognormal);
  EXPECT_DOUBLE_EQ(d->median_ms, 12000);
  EXPECT_DOUBLE_EQ(d->sigma, 0.6);

  d = ParseReadyDist("uniform:max_ms=900,min_ms=100", &error);
  ASSERT_TRUE(d.has_value()) << error;
  EXPECT_EQ(d->kind, Kind::kUniform);
  EXPECT_EQ(d->min_ms, 100);
  EXPECT_EQ(d->max_ms, 900);
  EXPECT_TRUE(ParseReadyDist("uniform:min_ms=0,max_ms=0", &error).has_value());
  EXPECT_TRUE(ParseReadyDist("lognormal:median_ms=1.5,sigma=0", &error).has_value());
}

TEST(MockReadyTest, RefusesBadSpecsWithAReason) {
  struct Case {
    const char* text;
    const char* reason;  // a part of the error
  } cases[] = {
      {"", "expected lognormal"},
      {"lognormal", "expected lognormal"},
      {"normal:median_ms=1,sigma=1", "unknown distribution"},
      {"lognormal:median_ms=1000", "needs sigma"},
      {"lognormal:sigma=1", "needs median_ms"},
      {"lognormal:median_ms=0,sigma=1", "median_ms"},
      {"lognormal:median_ms=-5,sigma=1", "median_ms"},
      {"lognormal:median_ms=x,sigma=1", "median_ms"},
      {"lognormal:median_ms=100000000,sigma=1", "median_ms"},
      {"lognormal:median_ms=1000,sigma=-0.1", "sigma"},
      {"lognormal:median_ms=1000,sigma=6", "sigma"},
      {"lognormal:median_ms=1000,sigma=0.5,max_ms=3", "unknown parameter max_ms"},
      {"lognormal:median_ms=1000,median_ms=2,sigma=1", "given twice"},
      {"lognormal:median_ms=1000,,sigma=1", "NAME=VALUE"},
      {"uniform:min_ms=5,max_ms=4", "min_ms"},
      {"uniform:min_ms=-1,max_ms=4", "min_ms"},
      {"uniform:min_ms=1.5,max_ms=4", "whole"},
      {"uniform:min_ms=1", "needs max_ms"},
  };
  for (const Case& c : cases) {
    std::string error;
    EXPECT_FALSE(ParseReadyDist(c.text, &error).has_value()) << c.text;
    EXPECT_NE(error.find(c.reason), std::string::npos) << c.text << " -> " << error;
  }
}

TEST(MockReadyTest, DrawIsTheQuantileFunction) {
  struct Case {
    ReadyDist dist;
    double u;
    int64_t want_ms;
  } cases[] = {
      {Lognormal(12000, 0.6), 0.5, 12000},
      {Lognormal(12000, 0.6), 0.841344746, 21865},  // median * e^sigma (one standard deviation up)
      {Lognormal(12000, 0.6), 0.158655254, 6586},   // median / e^sigma
      {Lognormal(12000, 0.6), 0.977249868, 39841},  // median * e^(2 sigma)
      {Lognormal(12000, 0.6), 0.001349898, 1983},   // median / e^(3 sigma): the lower tail formula
      {Lognormal(12000, 0), 0.99, 12000},
      {Lognormal(12000, 0.6), 0.0, 0},
      {Lognormal(12000, 5), 1.0, kMaxReadyMs},
      {Lognormal(12000, 0.6), -3.0, 0},  // u is clamped
      {Uniform(100, 900), 0.0, 100},
      {Uniform(100, 900), 0.5, 500},
      {Uniform(100, 900), 0.999999, 900},
      {Uniform(100, 900), 1.0, 900},
      {Uniform(7, 7), 0.3, 7},
  };
  for (const Case& c : cases) {
    EXPECT_NEAR(ReadyMsAt(c.dist, c.u), c.want_ms, 1) << "u=" << c.u;
  }
}

TEST(MockReadyTest, SeededUniformDrawsStayWithinBoundsAndCoverThem) {
  ReadySampler sampler(Uniform(100, 900), 42);
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (int i = 0; i < 20000; ++i) {
    int64_t ms = sampler.Next();
    ASSERT_GE(ms, 100);
    ASSERT_LE(ms, 900);
    lo = std::min(lo, ms);
    hi = std::max(hi, ms);
  }
  EXPECT_LT(lo, 110);
  EXPECT_GT(hi, 890);
}

TEST(MockReadyTest, SeededLognormalDrawsHaveTheMedianAndSpread) {
  ReadySampler sampler(Lognormal(12000, 0.6), 7);
  std::vector<int64_t> draws(20001);
  for (int64_t& ms : draws) ms = sampler.Next();
  std::sort(draws.begin(), draws.end());
  double median = static_cast<double>(draws[draws.size() / 2]);
  EXPECT_NEAR(median, 12000, 12000 * 0.03);
  // The 84th percentile sits near median * e^sigma.
  double p84 = static_cast<double>(draws[static_cast<size_t>(draws.size() * 0.8413)]);
  EXPECT_NEAR(std::log(p84 / median), 0.6, 0.05);

  ReadySampler again(Lognormal(12000, 0.6), 7);
  ReadySampler other(Lognormal(12000, 0.6), 8);
  std::vector<int64_t> a, b, c;
  ReadySampler first(Lognormal(12000, 0.6), 7);
  for (int i = 0; i < 5; ++i) {
    a.push_back(first.Next());
    b.push_back(again.Next());
    c.push_back(other.Next());
  }
  EXPECT_EQ(a, b) << "the same seed gives the same draws";
  EXPECT_NE(a, c);
}

RequestRecord Record(int n, int64_t ready_ms, int64_t seen_ms, uint32_t calls,
                     RequestRecord::Outcome outcome = RequestRecord::Outcome::kCompleted) {
  return {.request_id = "req_" + std::to_string(n),
          .site = "s",
          .submitted_ms = 0,
          .ready_ms = ready_ms,
          .first_seen_ms = seen_ms,
          .status_calls = calls,
          .outcome = outcome};
}

TEST(MockReadyTest, RequestLogKeepsTheNewestAndSummarizes) {
  RequestLog log(3);
  uint64_t h0 = log.Add(Record(0, 0, -1, 0, RequestRecord::Outcome::kNone));
  uint64_t h1 = log.Add(Record(1, 1000, 1100, 2));
  ASSERT_NE(log.Find(h0), nullptr);
  log.Find(h0)->status_calls = 9;
  log.Add(Record(2, 1000, 1500, 4));
  log.Add(Record(3, 1000, 1000, 3));  // evicts record 0
  EXPECT_EQ(log.Find(h0), nullptr);
  ASSERT_NE(log.Find(h1), nullptr);
  EXPECT_EQ(log.Find(h1)->request_id, "req_1");
  EXPECT_EQ(log.Find(99), nullptr);

  std::vector<RequestRecord> all = log.Snapshot();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].request_id, "req_1") << "oldest first";
  EXPECT_EQ(all[2].request_id, "req_3");

  AnswerTimes t = RequestLog::Summarize(log.CollectCompleted());
  EXPECT_EQ(t.records, 3u);
  EXPECT_EQ(t.completed, 3u);
  EXPECT_EQ(t.ready_to_seen_p50_ms, 100);
  EXPECT_EQ(t.ready_to_seen_p95_ms, 500);
  EXPECT_EQ(t.ready_to_seen_max_ms, 500);
  EXPECT_DOUBLE_EQ(t.status_calls_per_completed, 3.0);

  log.Clear();
  EXPECT_TRUE(log.Snapshot().empty());
  EXPECT_EQ(RequestLog::Summarize(log.CollectCompleted()).completed, 0u);
}

TEST(MockReadyTest, RecordsJsonHasEveryFieldAndNullsForUnseen) {
  nlohmann::json j = nlohmann::json::parse(
      RecordsJson({Record(1, 1000, 1100, 2), Record(2, 900, -1, 1, RequestRecord::Outcome::kNone)}));
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0], (nlohmann::json{{"request_id", "req_1"},
                                  {"site", "s"},
                                  {"submitted_ms", 0},
                                  {"ready_ms", 1000},
                                  {"first_seen_ms", 1100},
                                  {"status_calls", 2},
                                  {"outcome", "completed"}}));
  EXPECT_EQ(j[1]["first_seen_ms"], nullptr);
  EXPECT_EQ(j[1]["outcome"], nullptr);
  EXPECT_EQ(RecordsJson({}), "[]");
}

}  // namespace
}  // namespace uppzy::mock
