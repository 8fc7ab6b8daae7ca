// Ratings and session closes delivered by the real worker to the real mock, with the jobs' guarantees.
#include <gtest/gtest.h>

#include <pqxx/pqxx>
#include <thread>

#include "support/support.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;

class FeedbackE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    mock_ = std::make_unique<test::MockProcess>(std::vector<std::string>{"--ready-after-ms", "50"}, "fb-key");
    worker_ = std::make_unique<test::Process>(std::vector<std::string>{UPPZY_WORKER_BIN, "run"},
                                              test::WorkerEnv(db_, *mock_));
  }

  long long CompletedJob(const std::string& session) {
    const long long id = QueryInt(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('" +
                                           session + "', 'a question') RETURNING id");
    EXPECT_TRUE(test::WaitFor([&] { return JobState(id) == "completed"; }, 20s)) << worker_->Log();
    return id;
  }
  std::string JobState(long long id) {
    return Query(db_, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
  }
  long long Rate(long long job, const std::string& rating) {
    return QueryInt(db_, "SELECT uppzy.rate_job(" + std::to_string(job) + ", '" + rating + "')");
  }
  std::string Feedback(long long id, const std::string& expr) {
    return Query(db_, "SELECT " + expr + " FROM uppzy.chat_feedback WHERE id = " + std::to_string(id));
  }
  bool WaitFeedback(long long id, const std::string& state) {
    return test::WaitFor([&] { return Feedback(id, "state") == state; }, 20s);
  }

  std::string db_;
  std::unique_ptr<test::MockProcess> mock_;
  std::unique_ptr<test::Process> worker_;
};

TEST_F(FeedbackE2E, RatingOfACompletedJobIsDeliveredWithUppzysTimestamp) {
  const long long job = CompletedJob("fb-session-1");
  const long long rating = Rate(job, "good");
  ASSERT_TRUE(WaitFeedback(rating, "delivered")) << worker_->Log();
  EXPECT_EQ(Feedback(rating, "feedback_submitted_at IS NOT NULL AND delivered_at IS NOT NULL"), "t");
  EXPECT_EQ(Feedback(rating, "attempts"), "1");
  EXPECT_EQ(Feedback(rating, "request_id = (SELECT request_id FROM uppzy.chat_jobs WHERE id = " +
                                 std::to_string(job) + ")"),
            "t");
  EXPECT_EQ(mock_->Stats()["feedbacks"], 1);
}

TEST_F(FeedbackE2E, RateLimitedThenOkIsDeliveredOnAttemptTwo) {
  const long long rating = Rate(CompletedJob("fb-2 mock.feedback=429,ok"), "bad");
  ASSERT_TRUE(WaitFeedback(rating, "delivered")) << worker_->Log();
  EXPECT_EQ(Feedback(rating, "attempts"), "2");
  EXPECT_EQ(Feedback(rating, "errors->0->>'kind'"), "rate_limited");
}

TEST_F(FeedbackE2E, BadRequestFailsAtOnce) {
  const long long rating = Rate(CompletedJob("fb-3 mock.feedback=400"), "good");
  ASSERT_TRUE(WaitFeedback(rating, "failed")) << worker_->Log();
  EXPECT_EQ(Feedback(rating, "error_kind || ' ' || attempts"), "bad_request 1");
}

TEST_F(FeedbackE2E, UnauthorizedOpensTheIncidentAndPausesEverything) {
  const long long rating = Rate(CompletedJob("fb-4 mock.feedback=401"), "good");
  ASSERT_TRUE(test::WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.incidents") == 1; }, 20s))
      << worker_->Log();
  ASSERT_TRUE(test::WaitFor([&] { return Feedback(rating, "state || ' ' || attempts") == "queued 0"; }, 10s));
  // The rating is back in `queued`, so the 401 was the last call, and the pause came before it.
  const auto calls = mock_->Stats()["requests_total"].get<long long>();
  const long long job =
      QueryInt(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('x', 'y') RETURNING id");
  // A check that nothing happens needs elapsed time: 15 fetch intervals and an incident check.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(mock_->Stats()["requests_total"].get<long long>(), calls)
      << "no Uppzy call while the incident is open";
  EXPECT_EQ(JobState(job), "queued");
  std::string out;
  ASSERT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "incidents", "resolve", "--all"}, {{"DATABASE_URL", db_}}, &out), 0)
      << out;
  ASSERT_TRUE(WaitFeedback(rating, "delivered")) << worker_->Log();
  ASSERT_TRUE(test::WaitFor([&] { return JobState(job) == "completed"; }, 20s));
}

TEST_F(FeedbackE2E, SessionCloseIsDeliveredAndARepeatedCloseIsFine) {
  const long long first = QueryInt(db_, "SELECT uppzy.close_session('fb-close-1')");
  ASSERT_TRUE(test::WaitFor(
      [&] {
        return Query(db_, "SELECT state FROM uppzy.session_closes WHERE id = " + std::to_string(first)) ==
               "delivered";
      },
      20s))
      << worker_->Log();
  const long long second = QueryInt(db_, "SELECT uppzy.close_session('fb-close-1')");
  ASSERT_TRUE(test::WaitFor(
      [&] {
        return Query(db_, "SELECT state FROM uppzy.session_closes WHERE id = " + std::to_string(second)) ==
               "delivered";
      },
      20s))
      << worker_->Log();
  EXPECT_EQ(mock_->Stats()["closes"], 2);
}

TEST_F(FeedbackE2E, FinishNotificationCarriesTheKind) {
  pqxx::connection listen(db_);
  struct Collector : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
    std::vector<std::string> payloads;
  } finished(listen, "uppzy_chat_jobs");
  listen.get_notifs();
  const long long rating = Rate(CompletedJob("fb-6"), "good");
  ASSERT_TRUE(test::WaitFor(
      [&] {
        listen.get_notifs();
        for (const auto& p : finished.payloads) {
          if (nlohmann::json::parse(p).value("kind", "") == "feedback") return true;
        }
        return false;
      },
      20s));
  for (const auto& p : finished.payloads) {
    auto j = nlohmann::json::parse(p);
    if (j["kind"] == "feedback") {
      EXPECT_EQ(j["id"], rating);
      EXPECT_EQ(j["state"], "delivered");
    } else {
      EXPECT_EQ(j["kind"], "chat_job");
    }
  }
}

TEST_F(FeedbackE2E, ABurstOfRatingsDoesNotStopChatJobs) {
  std::vector<long long> jobs;
  for (int i = 0; i < 20; ++i) jobs.push_back(CompletedJob("burst-" + std::to_string(i)));
  // 2,000 ratings at once (the same 20 requests cannot be rated twice, so rate with plain INSERTs of
  // closes, which share the delivery path and its capacity).
  test::Exec(db_,
             "INSERT INTO uppzy.session_closes (session_id) SELECT 'burst-close-' || g FROM "
             "generate_series(1, 2000) g");
  for (long long j : jobs) Rate(j, "good");
  const long long job =
      QueryInt(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('c', 'q') RETURNING id");
  ASSERT_TRUE(test::WaitFor([&] { return JobState(job) == "completed"; }, 30s)) << "chat jobs keep flowing";
  ASSERT_TRUE(test::WaitFor(
      [&] {
        return QueryInt(db_, "SELECT count(*) FROM uppzy.session_closes WHERE state = 'delivered'") == 2000;
      },
      60s));
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_feedback WHERE state = 'delivered'"), 20);
}

}  // namespace
}  // namespace uppzy
