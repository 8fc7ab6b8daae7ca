// Operations against a real PostgreSQL: the views (numbers match a hand-built fixture), the operator
// functions (retry keeps history, cancel at once or on request, purge by age and state, incidents),
// the cancellation trigger, and OpsStore on top of them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "support/support.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

// Rows and filters are built with designated initializers that name only the fields a case cares
// about; the others keep their defaults on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace uppzy {
namespace {

using test::Exec;
using test::Query;
using test::QueryInt;

// One job row, described by what a case cares about. Times are seconds before now().
struct Row {
  std::string state = "queued";
  int attempts = 0;
  double created_ago = 0;
  double finished_ago = -1;  // -1: not finished
  std::string error_kind;
  std::string errors = "[]";
  std::string request_id;
};

long long Insert(const std::string& db, const Row& r) {
  pqxx::connection c(db);
  pqxx::work tx(c);
  auto res = tx.exec_params(
      R"sql(
INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, answer, error_kind, errors,
                             created_at, finished_at)
VALUES ('sess', 'a private question', $1, $2, nullif($3, ''),
        CASE WHEN $1 = 'completed' THEN 'the answer' END, nullif($4, ''), $5::jsonb,
        now() - $6 * interval '1 second',
        CASE WHEN $7 < 0 THEN NULL ELSE now() - $7 * interval '1 second' END)
RETURNING id)sql",
      r.state, r.attempts, r.request_id, r.error_kind, r.errors, r.created_ago, r.finished_ago);
  tx.commit();
  return res[0][0].as<long long>();
}

std::string Field(const std::string& db, long long id, const std::string& expr) {
  return Query(db, "SELECT " + expr + " FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
}

constexpr double kHour = 3600, kDay = 86400;

class OpsViews : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    // Unfinished.
    Insert(db_, {.state = "queued", .created_ago = 600});
    Insert(db_, {.state = "queued", .created_ago = 60});
    Insert(db_, {.state = "polling", .attempts = 1, .created_ago = 30, .request_id = "req_p"});
    Insert(db_, {.state = "retrying", .attempts = 1, .created_ago = 2 * kHour});
    // Finished in the last hour: two completed (10 s and 30 s to answer; the second retried after a
    // poll timeout), one failed after 3 attempts, one cancelled.
    Insert(db_, {.state = "completed", .attempts = 1, .created_ago = 40, .finished_ago = 30});
    Insert(db_, {.state = "completed",
                 .attempts = 2,
                 .created_ago = 130,
                 .finished_ago = 100,
                 .errors = R"([{"kind": "poll_timeout", "attempt": 1}])"});
    f1_ = Insert(
        db_, {.state = "failed",
              .attempts = 3,
              .created_ago = 300,
              .finished_ago = 200,
              .error_kind = "server_error",
              .errors = R"([{"kind": "server_error"}, {"kind": "server_error"}, {"kind": "server_error"}])"});
    Insert(db_, {.state = "cancelled", .created_ago = 50, .finished_ago = 45, .error_kind = "cancelled"});
    // Finished 3 hours ago: completed in 20 s; failed twice on poll timeouts.
    Insert(db_,
           {.state = "completed", .attempts = 1, .created_ago = 3 * kHour + 20, .finished_ago = 3 * kHour});
    f2_ = Insert(db_, {.state = "failed",
                       .attempts = 2,
                       .created_ago = 3 * kHour + 100,
                       .finished_ago = 3 * kHour,
                       .error_kind = "poll_timeout",
                       .errors = R"([{"kind": "poll_timeout"}, {"kind": "poll_timeout"}])"});
    // Older than a day: outside both windows.
    c4_ = Insert(
        db_, {.state = "completed", .attempts = 1, .created_ago = 2 * kDay + 5, .finished_ago = 2 * kDay});
    f3_ = Insert(db_, {.state = "failed",
                       .attempts = 1,
                       .created_ago = 8 * kDay,
                       .finished_ago = 8 * kDay,
                       .error_kind = "bad_request",
                       .errors = R"([{"kind": "bad_request"}])"});
  }

  std::string db_;
  long long f1_ = 0, f2_ = 0, f3_ = 0, c4_ = 0;
};

TEST_F(OpsViews, StatsHasOneRowPerStateWithCountsAndOldestAge) {
  OpsStore ops(db_);
  const auto stats = ops.StatsByState();
  ASSERT_EQ(stats.size(), 7u);
  std::map<std::string, StateCount> by;
  for (const auto& s : stats) by[s.state] = s;
  EXPECT_EQ(stats.front().state, "queued");
  EXPECT_EQ(by["queued"].jobs, 2);
  EXPECT_NEAR(*by["queued"].oldest_age_seconds, 600, 5);
  EXPECT_EQ(by["submitting"].jobs, 0);
  EXPECT_FALSE(by["submitting"].oldest_age_seconds.has_value());
  EXPECT_EQ(by["polling"].jobs, 1);
  EXPECT_EQ(by["retrying"].jobs, 1);
  EXPECT_NEAR(*by["retrying"].oldest_age_seconds, 2 * kHour, 5);
  EXPECT_EQ(by["completed"].jobs, 4);
  EXPECT_NEAR(*by["completed"].oldest_age_seconds, 2 * kDay, 5) << "finished rows: age since finished_at";
  EXPECT_EQ(by["failed"].jobs, 3);
  EXPECT_NEAR(*by["failed"].oldest_age_seconds, 8 * kDay, 5);
  EXPECT_EQ(by["cancelled"].jobs, 1);

  const auto unfinished = ops.StatsByState(true);
  ASSERT_EQ(unfinished.size(), 4u);
  EXPECT_EQ(unfinished[0].state, "queued");
  EXPECT_EQ(unfinished[3].state, "retrying");
  // psql sees the same numbers.
  EXPECT_EQ(QueryInt(db_, "SELECT jobs FROM uppzy.chat_job_stats WHERE state = 'completed'"), 4);
}

TEST_F(OpsViews, HealthMatchesTheFixtureForBothWindows) {
  OpsStore ops(db_);
  const auto health = ops.HealthWindows();
  ASSERT_EQ(health.size(), 2u);
  const HealthWindow& hour = health[0];
  EXPECT_EQ(hour.period, "1 hour");
  EXPECT_EQ(hour.finished, 4);
  EXPECT_EQ(hour.completed, 2);
  EXPECT_EQ(hour.failed, 1);
  EXPECT_EQ(hour.cancelled, 1);
  EXPECT_EQ(hour.poll_timeouts, 1);
  EXPECT_DOUBLE_EQ(*hour.timeout_rate, 0.25);
  EXPECT_EQ(hour.retried, 2);
  EXPECT_DOUBLE_EQ(*hour.retry_rate, 0.5);
  EXPECT_NEAR(*hour.p50_seconds, 20, 0.01);  // completed: 10 s and 30 s
  EXPECT_NEAR(*hour.p95_seconds, 29, 0.01);
  EXPECT_EQ(nlohmann::json::parse(hour.failures_by_kind_json), nlohmann::json({{"server_error", 1}}));

  const HealthWindow& day = health[1];
  EXPECT_EQ(day.period, "24 hours");
  EXPECT_EQ(day.finished, 6);
  EXPECT_EQ(day.completed, 3);
  EXPECT_EQ(day.failed, 2);
  EXPECT_EQ(day.cancelled, 1);
  EXPECT_EQ(day.poll_timeouts, 2);
  EXPECT_NEAR(*day.timeout_rate, 0.3333, 1e-9);
  EXPECT_EQ(day.retried, 3);
  EXPECT_DOUBLE_EQ(*day.retry_rate, 0.5);
  EXPECT_NEAR(*day.p50_seconds, 20, 0.01);  // 10, 20, 30
  EXPECT_NEAR(*day.p95_seconds, 29, 0.01);
  EXPECT_EQ(nlohmann::json::parse(day.failures_by_kind_json),
            nlohmann::json({{"server_error", 1}, {"poll_timeout", 1}}));
}

TEST(OpsViewsEmpty, HealthOfAnEmptyTableHasNullRates) {
  const std::string db = test::MigratedDatabase();
  OpsStore ops(db);
  const auto health = ops.HealthWindows();
  ASSERT_EQ(health.size(), 2u);
  for (const auto& h : health) {
    EXPECT_EQ(h.finished, 0);
    EXPECT_FALSE(h.timeout_rate.has_value());
    EXPECT_FALSE(h.p50_seconds.has_value());
    EXPECT_EQ(h.failures_by_kind_json, "{}");
  }
}

TEST_F(OpsViews, FailuresListsFailedJobsNewestFirstWithoutText) {
  EXPECT_EQ(Query(db_, "SELECT string_agg(id::text, ',') FROM uppzy.chat_job_failures"),
            std::to_string(f1_) + "," + std::to_string(f2_) + "," + std::to_string(f3_));
  EXPECT_EQ(Query(db_, "SELECT jsonb_array_length(errors) FROM uppzy.chat_job_failures LIMIT 1"), "3");
  EXPECT_EQ(QueryInt(db_,
                     "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'uppzy' AND "
                     "table_name = 'chat_job_failures' AND column_name IN ('message', 'answer', 'result')"),
            0);
  EXPECT_EQ(Query(db_,
                  "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM "
                  "information_schema.columns WHERE table_schema = 'uppzy' AND table_name = "
                  "'chat_job_failures' AND column_name IN ('error_kind', 'last_error', 'attempts', "
                  "'errors', 'finished_at')"),
            "error_kind,last_error,attempts,errors,finished_at");
}

// Each wake-up names what it may have made claimable (a worker woken by new chat jobs claims no
// ratings or closes): '' for chat jobs, 'delivery' for ratings and closes, 'sites' for a site's change.
TEST(WakeUps, EachNotifyNamesWhatToClaim) {
  const std::string db = test::MigratedDatabase();
  Listener wake(db, "uppzy_chat_jobs_wakeup");
  auto next = [&] {
    std::vector<std::string> payloads;
    wake.Wait(2000, &payloads);
    return payloads;
  };
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm'), ('s', 'm')");
  EXPECT_EQ(next(), std::vector<std::string>{""}) << "one per statement, however many rows";
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s')");
  EXPECT_EQ(next(), std::vector<std::string>{"delivery"});
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('shop')");
  EXPECT_EQ(next(), std::vector<std::string>{"sites"});
  Exec(db, "UPDATE uppzy.sites SET paused_at = now() WHERE site_id = 'shop'");
  EXPECT_EQ(next(), std::vector<std::string>{"sites"});
}

TEST_F(OpsViews, RetryRequeuesFinishedJobsKeepsHistoryAndWakesWorkers) {
  Listener wake(db_, "uppzy_chat_jobs_wakeup");
  OpsStore ops(db_);
  const long long queued = QueryInt(db_, "SELECT min(id) FROM uppzy.chat_jobs WHERE state = 'queued'");
  EXPECT_EQ(ops.JobsRetry({f1_, queued, 999999}), 1) << "only finished jobs are requeued";
  EXPECT_GE(wake.Wait(2000), 1);
  EXPECT_EQ(Field(db_, f1_, "state"), "queued");
  EXPECT_EQ(Field(db_, f1_, "attempts"), "0");
  EXPECT_EQ(Field(db_, f1_, "finished_at IS NULL AND error_kind IS NULL AND run_at <= now()"), "t");
  EXPECT_EQ(Field(db_, f1_, "jsonb_array_length(errors)"), "4") << "history kept";
  EXPECT_EQ(Field(db_, f1_, "errors->3->>'kind'"), "operator_retry");
  EXPECT_EQ(Field(db_, f1_, "errors->3->>'message'"), "requeued by an operator");
  EXPECT_EQ(Field(db_, f1_, "errors->3->>'attempt'"), "3");
  EXPECT_EQ(
      Field(db_, f1_, "errors->3 ?& array['attempt', 'at', 'kind', 'http_status', 'message', 'request_id']"),
      "t");
  // A completed job can be asked again: its answer is cleared.
  EXPECT_EQ(ops.JobsRetry({c4_}), 1);
  EXPECT_EQ(Field(db_, c4_, "state || ' ' || (answer IS NULL)"), "queued true");
  EXPECT_EQ(ops.JobsRetry({}), 0);
}

TEST_F(OpsViews, RetryFailedFiltersByKindAndAge) {
  OpsStore ops(db_);
  EXPECT_EQ(ops.JobsRetryFailed("poll_timeout", std::chrono::seconds(3600)), 0) << "f2 failed 3 hours ago";
  EXPECT_EQ(ops.JobsRetryFailed("poll_timeout", std::chrono::seconds(86400)), 1);
  EXPECT_EQ(Field(db_, f2_, "state"), "queued");
  EXPECT_EQ(ops.JobsRetryFailed("", std::nullopt), 2) << "f1 and f3 are left";
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'failed'"), 0);
  EXPECT_EQ(QueryInt(db_, "SELECT uppzy.retry_failed()"), 0);
}

TEST_F(OpsViews, CancelIsImmediateForWaitingJobsAndRequestedForInFlightOnes) {
  Listener wake(db_, "uppzy_chat_jobs_wakeup");
  OpsStore ops(db_);
  const long long queued = QueryInt(db_, "SELECT min(id) FROM uppzy.chat_jobs WHERE state = 'queued'");
  const long long retrying = QueryInt(db_, "SELECT id FROM uppzy.chat_jobs WHERE state = 'retrying'");
  const long long polling = QueryInt(db_, "SELECT id FROM uppzy.chat_jobs WHERE state = 'polling'");
  EXPECT_EQ(ops.JobsCancel({queued, retrying, polling, c4_, 999999}), 3);
  for (long long id : {queued, retrying}) {
    EXPECT_EQ(Field(db_, id, "state || ' ' || error_kind || ' ' || (finished_at IS NOT NULL)"),
              "cancelled cancelled true");
    EXPECT_EQ(Field(db_, id, "errors->-1->>'kind'"), "cancelled");
  }
  EXPECT_EQ(Field(db_, polling, "state || ' ' || (cancel_requested_at IS NOT NULL)"), "polling true")
      << "the worker holding it finishes it";
  EXPECT_GE(wake.Wait(2000), 1) << "in-flight cancellations wake the workers";
  EXPECT_EQ(Field(db_, c4_, "state || ' ' || (cancel_requested_at IS NULL)"), "completed true");
  // Asking again changes nothing.
  EXPECT_EQ(ops.JobsCancel({queued}), 0);
}

TEST_F(OpsViews, AppCancelsWithPlainSqlAndHandedBackRowsStayCancelled) {
  Listener finished(db_, "uppzy_chat_jobs");
  const long long queued = QueryInt(db_, "SELECT max(id) FROM uppzy.chat_jobs WHERE state = 'queued'");
  Exec(db_, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = " + std::to_string(queued));
  EXPECT_EQ(Field(db_, queued, "state"), "cancelled");
  EXPECT_EQ(finished.Wait(2000), 1) << "the app is told, once";
  // A finished row ignores the request.
  Exec(db_, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = " + std::to_string(c4_));
  EXPECT_EQ(Field(db_, c4_, "cancel_requested_at IS NULL"), "t");
  // A worker handing back a row whose cancellation was requested meanwhile (401, shutdown): the row
  // does not wait in queued, it is cancelled.
  const long long polling = QueryInt(db_, "SELECT id FROM uppzy.chat_jobs WHERE state = 'polling'");
  Exec(db_, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = " + std::to_string(polling));
  EXPECT_EQ(Field(db_, polling, "state"), "polling");
  Exec(db_, "UPDATE uppzy.chat_jobs SET state = 'queued', attempts = 0, request_id = NULL WHERE id = " +
                std::to_string(polling));
  EXPECT_EQ(Field(db_, polling, "state || ' ' || (finished_at IS NOT NULL)"), "cancelled true");
  // Both notify triggers fire when one UPDATE sets both columns: still one notification.
  finished.Wait(200);
  const long long retrying = QueryInt(db_, "SELECT id FROM uppzy.chat_jobs WHERE state = 'retrying'");
  Exec(db_, "UPDATE uppzy.chat_jobs SET state = 'queued', cancel_requested_at = now() WHERE id = " +
                std::to_string(retrying));
  EXPECT_EQ(finished.Wait(1000), 1);
}

TEST_F(OpsViews, PurgeDeletesOnlyOldRowsOfOneFinishedState) {
  OpsStore ops(db_);
  EXPECT_EQ(ops.JobsPurge("completed", std::chrono::seconds(86400), 1000), 1);
  EXPECT_EQ(Field(db_, c4_, "count(*)"), "0");
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed'"), 3);
  EXPECT_EQ(ops.JobsPurge("failed", std::chrono::seconds(7 * 86400), 1000), 1) << "f3 only";
  EXPECT_EQ(Field(db_, f3_, "count(*)"), "0");
  EXPECT_EQ(ops.JobsPurge("failed", std::chrono::seconds(7 * 86400), 1000), 0);
  EXPECT_EQ(
      QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state IN ('queued', 'polling', 'retrying')"),
      4);
  // Batches: three old cancelled rows, two at a time.
  for (int i = 0; i < 3; ++i)
    Insert(db_, {.state = "cancelled", .created_ago = 10 * kDay, .finished_ago = 9 * kDay});
  EXPECT_EQ(ops.JobsPurge("cancelled", std::chrono::seconds(86400), 2), 2);
  EXPECT_EQ(ops.JobsPurge("cancelled", std::chrono::seconds(86400), 2), 1);
  // Unfinished states and bad arguments are refused with a clear error.
  try {
    ops.JobsPurge("queued", std::chrono::seconds(1), 10);
    FAIL() << "purged queued jobs";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("state must be completed, failed or cancelled"), std::string::npos)
        << e.what();
    EXPECT_FALSE(e.transient());
  }
  EXPECT_THROW(ops.JobsPurge("completed", std::chrono::seconds(1), 0), StoreError);
}

TEST_F(OpsViews, JobsListFiltersAndShowReturnsTextOnlyWhenAsked) {
  OpsStore ops(db_);
  auto failed = ops.JobsList({.state = "failed"});
  ASSERT_EQ(failed.size(), 3u);
  EXPECT_EQ(failed[0].id, f3_) << "newest first by id";
  auto recent = ops.JobsList({.state = "failed", .since = std::chrono::seconds(3600)});
  ASSERT_EQ(recent.size(), 1u);
  EXPECT_EQ(recent[0].id, f1_);
  EXPECT_EQ(ops.JobsList({.error_kind = "poll_timeout"}).size(), 1u);
  EXPECT_EQ(ops.JobsList({.limit = 2}).size(), 2u);

  auto hidden = ops.JobsGet(f1_, false);
  ASSERT_TRUE(hidden.has_value());
  EXPECT_FALSE(hidden->message.has_value());
  EXPECT_EQ(hidden->state, "failed");
  EXPECT_EQ(hidden->error_kind, "server_error");
  EXPECT_EQ(nlohmann::json::parse(hidden->errors_json).size(), 3u);
  EXPECT_EQ(hidden->finished_at.size(), 20u) << hidden->finished_at;  // 2024-05-01T12:00:00Z
  auto shown = ops.JobsGet(c4_, true);
  ASSERT_TRUE(shown->message.has_value());
  EXPECT_EQ(*shown->message, "a private question");
  EXPECT_EQ(shown->answer.value_or(""), "the answer");
  EXPECT_FALSE(ops.JobsGet(999999, false).has_value());
  auto states = ops.JobsStates({f1_, 999999});
  EXPECT_EQ(states.size(), 1u);
  EXPECT_EQ(states[f1_], "failed");
}

TEST(OpsIncidents, ResolveOneOrAllThroughTheFunctions) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  auto [a, created_a] = store.IncidentsOpen("unauthorized", 401, "bad key", "site", "fp-a", "w1");
  store.IncidentsOpen("forbidden", 403, "plan", "site", "fp-b", "w1");
  store.IncidentsOpen("forbidden", 403, "plan", "site", "fp-c", "w1");
  OpsStore ops(db);
  EXPECT_EQ(ops.IncidentsOpenCount(), 3);
  EXPECT_TRUE(ops.IncidentsResolve(a));
  EXPECT_FALSE(ops.IncidentsResolve(a)) << "already resolved";
  EXPECT_FALSE(ops.IncidentsResolve(999999));
  EXPECT_EQ(ops.IncidentsResolveAll(), 2);
  EXPECT_EQ(ops.IncidentsOpenCount(), 0);
}

}  // namespace
}  // namespace uppzy
