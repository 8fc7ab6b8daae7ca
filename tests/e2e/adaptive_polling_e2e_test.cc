// Adaptive polling end to end: the real worker learns a site's answer times from the jobs it finished
// (stored on the rows, read back by its maintenance thread) and then polls the next jobs less often.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "support/wait_for.h"
#include "support/worker_fixture.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;
using test::WaitFor;

class AdaptivePollingE2E : public test::WorkerFixture {
 protected:
  void SetUp() override {
    test::WorkerFixture::SetUp();
    // Answers ready after about 1 s (lognormal, median 1 s, sigma 0.3), as a real site's spread.
    mock_ = std::make_unique<test::MockProcess>(
        std::vector<std::string>{"--ready-dist", "lognormal:median_ms=1000,sigma=0.3", "--seed", "7"}, key_);
  }

  void EnqueueBatch(int n, const std::string& tag) {
    Exec(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', '" + tag +
                  " ' || g FROM generate_series(1, " + std::to_string(n) + ") g");
  }

  bool AllCompleted(const std::string& tag, int n) {
    return WaitFor(
        [&] {
          return QueryInt(
                     db_,
                     "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed' AND message LIKE '" +
                         tag + " %'") == n;
        },
        30s);
  }

  double PollsPerJob(const std::string& tag) {
    return std::stod(Query(db_, "SELECT avg(polls) FROM uppzy.chat_jobs WHERE message LIKE '" + tag + " %'"));
  }

  static void Exec(const std::string& db, const std::string& sql) { test::Exec(db, sql); }
};

TEST_F(AdaptivePollingE2E, AfterLearningTheSitesAnswerTimesTheWorkerPollsLessForTheSameAnswers) {
  auto worker = StartWorker({{"UPPZY_POLL_MODE", "adaptive"},
                             {"UPPZY_POLL_INTERVAL_MS", "100"},
                             {"UPPZY_POLL_TARGET_DELAY_MS", "150"},
                             // The estimate reads jobs submitted at least a poll timeout (+5 s) ago.
                             {"UPPZY_POLL_TIMEOUT_MS", "3000"},
                             {"UPPZY_STATS_INTERVAL_MS", "100"},
                             {"UPPZY_LOG_LEVEL", "debug"}});
  // Too few answers yet: the fixed 100 ms tick.
  EnqueueBatch(80, "first");
  ASSERT_TRUE(AllCompleted("first", 80)) << worker->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return worker->Log().find("\"adaptive\":\"true\"") != std::string::npos ||
               worker->Log().find("adaptive=true") != std::string::npos;
      },
      30s))
      << "the worker never published an adaptive plan:\n"
      << worker->Log();
  EnqueueBatch(80, "second");
  ASSERT_TRUE(AllCompleted("second", 80)) << worker->Log();
  const double before = PollsPerJob("first");
  const double after = PollsPerJob("second");
  EXPECT_GE(before, 5)
      << "the fixed tick polls about every 100 ms for answers of about 1 s (fewer on a slow machine)";
  EXPECT_LE(after, 0.75 * before) << "before " << before << ", after " << after;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE error_kind IS NOT NULL"), 0);
  // Operators see the figures per site: `stats` (uppzy.site_polling_health) and /metrics.
  const auto stats = test::RunWorkerCliJson(db_, {"stats", "--json"});
  ASSERT_EQ(stats["sites"].size(), 1u) << stats.dump();
  EXPECT_TRUE(stats["sites"][0]["site_id"].is_null()) << "jobs without a site are the default site's";
  EXPECT_EQ(stats["sites"][0]["completed"], 160);
  const double calls = stats["sites"][0]["status_calls_per_completed"].get<double>();
  EXPECT_NEAR(calls, (before + after) / 2, 0.05);
  EXPECT_GT(stats["sites"][0]["seen_gap_p50_s"].get<double>(), 0);
  EXPECT_NE(worker->Log().find("poll_plan_updated"), std::string::npos);
}

TEST_F(AdaptivePollingE2E, FixedModeNeverLeavesTheTick) {
  auto worker = StartWorker(
      {{"UPPZY_POLL_MODE", "fixed"}, {"UPPZY_POLL_INTERVAL_MS", "100"}, {"UPPZY_STATS_INTERVAL_MS", "100"}});
  EnqueueBatch(60, "a");
  ASSERT_TRUE(AllCompleted("a", 60)) << worker->Log();
  EnqueueBatch(60, "b");
  ASSERT_TRUE(AllCompleted("b", 60)) << worker->Log();
  EXPECT_GE(PollsPerJob("b"), 0.85 * PollsPerJob("a"));
  EXPECT_EQ(worker->Log().find("poll_plan_updated"), std::string::npos);
}

}  // namespace
}  // namespace uppzy
