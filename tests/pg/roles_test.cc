// The three database roles of `migrate --with-roles`: each LOGIN user granted one of them may do its
// job and is refused everything else (SQLSTATE 42501, insufficient_privilege).
#include <gtest/gtest.h>
#include <unistd.h>

#include <pqxx/pqxx>
#include <random>

#include "support/support.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using test::Exec;
using test::Query;
using test::QueryInt;

// The same URL with another user (the throwaway server trusts local TCP connections).
std::string AsUser(const std::string& url, const std::string& user) {
  const auto scheme = url.find("://") + 3;
  const auto at = url.find('@', scheme);
  return url.substr(0, scheme) + user + url.substr(at);
}

// "" when `sql` ran, "42501" when it was refused for lack of privilege, else the error.
std::string Try(const std::string& url, const std::string& sql) {
  try {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec(sql);
    tx.commit();
    return "";
  } catch (const pqxx::insufficient_privilege&) {
    return "42501";  // pqxx 6.4 leaves sql_error::sqlstate() empty; the class says it
  } catch (const pqxx::sql_error& e) {
    return std::string("error: ") + e.what();
  }
}

constexpr const char* kDenied = "42501";

class Roles : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    OpsStore(db_).RolesApply();
    OpsStore(db_).RolesApply();  // idempotent
    std::random_device rd;
    const std::string suffix = std::to_string(getpid()) + "_" + std::to_string(rd() % 1000000);
    for (const char* role : {"app", "operator", "worker"}) {
      const std::string login = std::string("t_") + role + "_" + suffix;
      Exec(test::AdminUrl(), "CREATE ROLE " + login + " LOGIN IN ROLE uppzy_" + role);
      logins_.push_back(login);
    }
    app_ = AsUser(db_, logins_[0]);
    operator_ = AsUser(db_, logins_[1]);
    worker_ = AsUser(db_, logins_[2]);
    job_ = QueryInt(
        db_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'secret text') RETURNING id");
    done_ =
        QueryInt(db_,
                 "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, answer, finished_at) "
                 "VALUES ('s', 'm', 'completed', 1, 'the answer', now()) RETURNING id");
  }

  void TearDown() override {
    for (const auto& login : logins_) {
      try {
        Exec(test::AdminUrl(), "DROP ROLE IF EXISTS " + login);
      } catch (...) {
      }
    }
  }

  std::string Id(long long id) { return std::to_string(id); }

  std::string db_, app_, operator_, worker_;
  std::vector<std::string> logins_;
  long long job_ = 0, done_ = 0;
};

TEST_F(Roles, TheRolesExistAndCannotLogIn) {
  EXPECT_EQ(Query(db_,
                  "SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles "
                  "WHERE rolname IN ('uppzy_app', 'uppzy_operator', 'uppzy_worker')"),
            "uppzy_app:false,uppzy_operator:false,uppzy_worker:false");
}

TEST_F(Roles, AppEnqueuesReadsAndCancelsButCannotChangeStatesOrAnswers) {
  EXPECT_EQ(Try(app_,
                "INSERT INTO uppzy.chat_jobs (job_key, session_id, message, metadata) VALUES ('k1', 's', "
                "'hi', '{\"u\": 1}') ON CONFLICT (job_key) DO NOTHING RETURNING id"),
            "");
  EXPECT_EQ(Try(app_, "SELECT state, answer, result, error_kind, errors FROM uppzy.chat_jobs"), "");
  EXPECT_EQ(Try(app_, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = " + Id(job_)), "");
  EXPECT_EQ(Query(db_, "SELECT state FROM uppzy.chat_jobs WHERE id = " + Id(job_)), "cancelled");

  EXPECT_EQ(Try(app_, "UPDATE uppzy.chat_jobs SET state = 'queued' WHERE id = " + Id(done_)), kDenied);
  EXPECT_EQ(Try(app_, "UPDATE uppzy.chat_jobs SET answer = 'forged' WHERE id = " + Id(done_)), kDenied);
  EXPECT_EQ(Try(app_, "UPDATE uppzy.chat_jobs SET attempts = 0 WHERE id = " + Id(done_)), kDenied);
  EXPECT_EQ(Try(app_,
                "INSERT INTO uppzy.chat_jobs (session_id, message, state, answer, finished_at) VALUES "
                "('s', 'm', 'completed', 'forged', now())"),
            kDenied);
  EXPECT_EQ(Try(app_, "DELETE FROM uppzy.chat_jobs"), kDenied);
  EXPECT_EQ(Try(app_, "SELECT uppzy.retry_jobs(ARRAY[" + Id(done_) + "]::bigint[])"), kDenied);
  EXPECT_EQ(Try(app_, "SELECT uppzy.purge_jobs('completed', '0 s')"), kDenied);
  EXPECT_EQ(Try(app_, "SELECT * FROM uppzy.incidents"), kDenied);
  EXPECT_EQ(Try(app_, "SELECT * FROM uppzy.chat_job_health"), kDenied);
  EXPECT_EQ(Query(db_, "SELECT answer FROM uppzy.chat_jobs WHERE id = " + Id(done_)), "the answer");
}

TEST_F(Roles, OperatorReadsViewsAndRunsTheFunctionsButEditsNoRowDirectly) {
  for (const char* view : {"chat_job_stats", "chat_job_health", "chat_job_failures", "incidents"}) {
    EXPECT_EQ(Try(operator_, std::string("SELECT * FROM uppzy.") + view), "") << view;
  }
  EXPECT_EQ(Try(operator_, "SELECT id, state, attempts, errors, error_kind, metadata FROM uppzy.chat_jobs"),
            "");
  EXPECT_EQ(Try(operator_, "SELECT uppzy.retry_jobs(ARRAY[" + Id(done_) + "]::bigint[])"), "");
  EXPECT_EQ(Query(db_, "SELECT state FROM uppzy.chat_jobs WHERE id = " + Id(done_)), "queued");
  EXPECT_EQ(Try(operator_, "SELECT uppzy.cancel_jobs(ARRAY[" + Id(job_) + "]::bigint[])"), "");
  EXPECT_EQ(Try(operator_, "SELECT uppzy.retry_failed('server_error', '1 hour')"), "");
  EXPECT_EQ(Try(operator_, "SELECT uppzy.purge_jobs('completed', '7 days')"), "");
  EXPECT_EQ(Try(operator_, "SELECT uppzy.resolve_all_incidents()"), "");

  EXPECT_EQ(Try(operator_, "UPDATE uppzy.chat_jobs SET state = 'failed' WHERE id = " + Id(job_)), kDenied);
  EXPECT_EQ(Try(operator_, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now()"), kDenied);
  EXPECT_EQ(Try(operator_, "DELETE FROM uppzy.chat_jobs"), kDenied);
  EXPECT_EQ(Try(operator_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')"), kDenied);
  EXPECT_EQ(Try(operator_, "SELECT message FROM uppzy.chat_jobs"), kDenied) << "no message text";
  EXPECT_EQ(Try(operator_, "SELECT answer FROM uppzy.chat_jobs"), kDenied) << "no answer text";
  EXPECT_EQ(Try(operator_, "UPDATE uppzy.incidents SET resolved_at = now()"), kDenied);
}

TEST_F(Roles, OperatorRunsTheCliAndShowTextIsRefused) {
  const std::map<std::string, std::string> env = {{"DATABASE_URL", operator_}};
  std::string out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "stats"}, env, &out), 0) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "jobs", "--json"}, env, &out), 0) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "show", Id(done_)}, env, &out), 0) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "retry", Id(done_)}, env, &out), 0) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "cancel", Id(job_)}, env, &out), 0) << out;
  EXPECT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "purge", "--state", "failed", "--older-than", "30d"}, env, &out), 0)
      << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "incidents", "resolve", "--all"}, env, &out), 0) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "show", Id(done_), "--show-text"}, env, &out), 1) << out;
  EXPECT_NE(out.find("permission denied"), std::string::npos) << out;
  EXPECT_EQ(out.find("secret text"), std::string::npos);
}

TEST_F(Roles, WorkerHasWhatTheWorkerNeedsAndNothingMore) {
  // Everything the worker's statements touch.
  Store store(worker_);
  auto claimed = store.JobsClaimQueued("w1", 30000, 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(store.JobsRenewLeases("w1", {claimed[0].id}, 30000).size(), 1u);
  EXPECT_EQ(store.JobsRescueExpiredSubmitting(10), 0);
  store.WorkersHeartbeat("w1", "host", 1, "", {}, 30000, 1, "closed", true);
  EXPECT_TRUE(store.LeasesSweepDue(Millis(30000))) << "it just started";
  EXPECT_TRUE(store.JobsAdoptHandedBack("w1", 30000, ClaimScope::DefaultOnly("", 10), 10).empty());
  EXPECT_EQ(store.IncidentsOpen("unauthorized", 401, "d", "site", "fp-w", "w1").second, true);
  EXPECT_TRUE(store.IncidentsOpenFor("fp-w").has_value());
  OpsStore ops(worker_);
  EXPECT_EQ(ops.StatsByState(true).size(), 4u);
  EXPECT_EQ(ops.JobsPurge("completed", std::chrono::seconds(86400), 100), 0);
  EXPECT_EQ(Try(worker_, "SELECT max(version) FROM uppzy.schema_migrations"), "");

  EXPECT_EQ(Try(worker_, "DELETE FROM uppzy.chat_jobs"), kDenied);
  EXPECT_EQ(Try(worker_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')"), kDenied);
  EXPECT_EQ(Try(worker_, "UPDATE uppzy.incidents SET resolved_at = now()"), kDenied);
  EXPECT_EQ(Try(worker_, "DELETE FROM uppzy.incidents"), kDenied);
  EXPECT_EQ(Try(worker_, "SELECT uppzy.retry_jobs(ARRAY[" + Id(done_) + "]::bigint[])"), kDenied);
  EXPECT_EQ(Try(worker_, "SELECT uppzy.resolve_all_incidents()"), kDenied);
  EXPECT_EQ(Try(worker_, "INSERT INTO uppzy.schema_migrations (version, name) VALUES (999, 'x')"), kDenied);
  EXPECT_EQ(Try(worker_, "CREATE TABLE uppzy.intruder (x int)"), kDenied);
}

TEST_F(Roles, TheRealWorkerRunsAJobAsUppzyWorker) {
  Exec(db_, "DELETE FROM uppzy.chat_jobs");
  const long long id = QueryInt(db_,
                                "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'as a role') "
                                "RETURNING id");
  test::MockProcess mock({"--ready-after-ms", "50"});
  auto env = test::WorkerEnv(worker_, mock);
  std::string out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "run", "--until-empty"}, env, &out), 0) << out;
  EXPECT_EQ(Query(db_, "SELECT state || ' ' || answer FROM uppzy.chat_jobs WHERE id = " + Id(id)),
            "completed echo: as a role");
  EXPECT_EQ(out.find("permission denied"), std::string::npos) << out;
  EXPECT_EQ(out.find("database_error"), std::string::npos) << out;
}

TEST(RolesCommand, MigrateWithRolesTwiceSucceeds) {
  const std::string db = test::FreshDatabase();
  std::string out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "migrate", "--with-roles"}, {{"DATABASE_URL", db}}, &out), 0)
      << out;
  EXPECT_NE(out.find("applied 0002_operations.sql"), std::string::npos) << out;
  EXPECT_NE(out.find("uppzy_operator"), std::string::npos) << out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "migrate", "--with-roles"}, {{"DATABASE_URL", db}}, &out), 0)
      << out;
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.schema_migrations WHERE name = 'roles.sql'"), 0)
      << "roles.sql is not a numbered migration";
  EXPECT_EQ(Query(db, "SELECT has_table_privilege('uppzy_app', 'uppzy.chat_jobs', 'DELETE')"), "f");
}

}  // namespace
}  // namespace uppzy
