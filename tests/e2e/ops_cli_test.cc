// The operator commands as real processes against a real PostgreSQL: exit codes (0 ok, 1 failed,
// 2 usage), --json that parses, unknown ids named, message text hidden without --show-text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/support.h"

namespace uppzy {
namespace {

using nlohmann::json;
using test::Query;
using test::QueryInt;

class OpsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    queued_ = QueryInt(db_,
                       "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'SENTINEL-7731 "
                       "question') RETURNING id");
    polling_ = QueryInt(db_,
                        "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id) "
                        "VALUES ('s', 'm', 'polling', 1, 'req_x') RETURNING id");
    failed_ = QueryInt(
        db_,
        "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, max_attempts, error_kind, "
        "last_error, last_http_status, errors, finished_at) VALUES ('s', 'SENTINEL-7731 failed', "
        "'failed', 3, 3, 'server_error', 'upstream 503', 503, '[{\"attempt\": 1, \"kind\": "
        "\"server_error\", \"http_status\": 503, \"message\": \"HTTP 503\"}]', now()) RETURNING id");
    completed_ =
        QueryInt(db_,
                 "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, answer, finished_at, "
                 "created_at) VALUES ('s', 'old', 'completed', 1, 'SENTINEL-ANSWER', now() - interval '8 "
                 "days', now() - interval '8 days') RETURNING id");
  }

  int Run(std::vector<std::string> args, std::string* out) {
    return test::RunWorkerCli(db_, std::move(args), out);
  }
  json RunJson(std::vector<std::string> args, int expect_rc = 0) {
    return test::RunWorkerCliJson(db_, std::move(args), expect_rc);
  }

  std::string State(long long id) {
    return Query(db_, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
  }

  std::string db_;
  long long queued_ = 0, polling_ = 0, failed_ = 0, completed_ = 0;
};

TEST_F(OpsCli, EverySubcommandHasHelp) {
  for (const char* cmd :
       {"stats", "jobs", "show", "retry", "cancel", "purge", "incidents", "sites", "migrate"}) {
    std::string out;
    EXPECT_EQ(Run({cmd, "--help"}, &out), 0) << cmd << ": " << out;
    EXPECT_NE(out.find("Usage"), std::string::npos) << cmd << ": " << out;
  }
}

TEST_F(OpsCli, StatsPrintsBothViewsAndOpenIncidents) {
  test::Exec(db_,
             "INSERT INTO uppzy.incidents (kind, http_status, api_key_fingerprint) VALUES ('forbidden', 403, "
             "'abcdef123456')");
  std::string out;
  ASSERT_EQ(Run({"stats"}, &out), 0) << out;
  for (const char* s : {"uppzy.chat_job_stats", "uppzy.chat_job_health", "queued", "24 hours",
                        "Open incidents: 1", "abcdef123456"}) {
    EXPECT_NE(out.find(s), std::string::npos) << s << " missing from:\n" << out;
  }
  json j = RunJson({"stats", "--json"});
  ASSERT_EQ(j["states"].size(), 7u);
  EXPECT_EQ(j["states"][0]["state"], "queued");
  EXPECT_EQ(j["states"][0]["jobs"], 1);
  ASSERT_EQ(j["health"].size(), 2u);
  EXPECT_EQ(j["health"][0]["period"], "1 hour");
  EXPECT_EQ(j["health"][0]["failed"], 1);
  EXPECT_EQ(j["health"][0]["failures_by_kind"]["server_error"], 1);
  EXPECT_EQ(j["open_incidents"].size(), 1u);
}

TEST_F(OpsCli, JobsListsAndFilters) {
  json all = RunJson({"jobs", "--json"});
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0]["id"], completed_) << "newest first";
  json failed =
      RunJson({"jobs", "--state", "failed", "--error-kind", "server_error", "--since", "1h", "--json"});
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]["id"], failed_);
  EXPECT_EQ(failed[0]["last_http_status"], 503);
  EXPECT_EQ(RunJson({"jobs", "--state", "completed", "--since", "1d", "--json"}).size(), 0u);
  EXPECT_EQ(RunJson({"jobs", "--limit", "2", "--json"}).size(), 2u);
  std::string out;
  ASSERT_EQ(Run({"jobs"}, &out), 0);
  EXPECT_EQ(out.find("SENTINEL"), std::string::npos) << "listings never show text";
  EXPECT_EQ(Run({"jobs", "--state", "running"}, &out), 2);
  EXPECT_NE(out.find("--state"), std::string::npos) << out;
  EXPECT_EQ(Run({"jobs", "--since", "5x"}, &out), 2);
  EXPECT_EQ(Run({"jobs", "--limit", "0"}, &out), 2);
}

TEST_F(OpsCli, ShowPrintsHistoryAndHidesTextUnlessAsked) {
  std::string out;
  ASSERT_EQ(Run({"show", std::to_string(failed_)}, &out), 0) << out;
  EXPECT_NE(out.find("server_error"), std::string::npos) << out;
  EXPECT_NE(out.find("HTTP 503"), std::string::npos) << out;
  EXPECT_EQ(out.find("SENTINEL"), std::string::npos) << out;
  json j = RunJson({"show", std::to_string(failed_), "--json"});
  EXPECT_EQ(j["errors"].size(), 1u);
  EXPECT_FALSE(j.contains("message"));
  ASSERT_EQ(Run({"show", std::to_string(completed_), "--show-text"}, &out), 0) << out;
  EXPECT_NE(out.find("SENTINEL-ANSWER"), std::string::npos) << out;
  j = RunJson({"show", std::to_string(failed_), "--show-text", "--json"});
  EXPECT_EQ(j["message"], "SENTINEL-7731 failed");

  EXPECT_EQ(Run({"show", "424242"}, &out), 1);
  EXPECT_NE(out.find("424242"), std::string::npos) << "an unknown id is named: " << out;
  EXPECT_EQ(Run({"show", "abc"}, &out), 2);
  EXPECT_EQ(Run({"show"}, &out), 2);
}

TEST_F(OpsCli, RetryByIdAndByFilter) {
  std::string out;
  ASSERT_EQ(Run({"retry", std::to_string(failed_)}, &out), 0) << out;
  EXPECT_NE(out.find("requeued 1 job(s)"), std::string::npos) << out;
  EXPECT_EQ(State(failed_), "queued");
  EXPECT_EQ(
      Query(db_, "SELECT errors->-1->>'kind' FROM uppzy.chat_jobs WHERE id = " + std::to_string(failed_)),
      "operator_retry");

  EXPECT_EQ(Run({"retry", std::to_string(completed_), "424242", std::to_string(polling_)}, &out), 1);
  EXPECT_NE(out.find("no job with id 424242"), std::string::npos) << out;
  EXPECT_NE(out.find("not finished"), std::string::npos) << out;
  EXPECT_EQ(State(completed_), "queued") << "the known finished id is still requeued";

  test::Exec(db_,
             "UPDATE uppzy.chat_jobs SET state = 'failed', error_kind = 'network', finished_at = now(), "
             "attempts = 1, answer = NULL WHERE id = " +
                 std::to_string(completed_));
  json j = RunJson({"retry", "--state", "failed", "--error-kind", "server_error", "--json"});
  EXPECT_EQ(j["requeued"], 0);
  j = RunJson({"retry", "--state", "failed", "--since", "1h", "--json"});
  EXPECT_EQ(j["requeued"], 1);

  EXPECT_EQ(Run({"retry"}, &out), 2) << out;
  EXPECT_EQ(Run({"retry", "1", "--state", "failed"}, &out), 2) << out;
  EXPECT_EQ(Run({"retry", "--state", "completed"}, &out), 2) << out;
  EXPECT_EQ(Run({"retry", "1", "--since", "1h"}, &out), 2) << out;
}

TEST_F(OpsCli, CancelQueuedAtOnceInFlightOnRequest) {
  json j = RunJson({"cancel", std::to_string(queued_), std::to_string(polling_), "--json"});
  EXPECT_EQ(j["cancelled"], json::array({queued_}));
  EXPECT_EQ(j["cancel_requested"], json::array({polling_}));
  EXPECT_EQ(State(queued_), "cancelled");
  EXPECT_EQ(Query(db_, "SELECT cancel_requested_at IS NOT NULL FROM uppzy.chat_jobs WHERE id = " +
                           std::to_string(polling_)),
            "t");
  std::string out;
  EXPECT_EQ(Run({"cancel", std::to_string(queued_)}, &out), 0) << "already cancelled is fine: " << out;
  EXPECT_EQ(Run({"cancel", "424242"}, &out), 1);
  EXPECT_NE(out.find("no job with id 424242"), std::string::npos) << out;
  EXPECT_EQ(Run({"cancel", std::to_string(failed_)}, &out), 1);
  EXPECT_NE(out.find("already failed"), std::string::npos) << out;
  EXPECT_EQ(Run({"cancel"}, &out), 2);
}

TEST_F(OpsCli, PurgeByStateAndAge) {
  std::string out;
  ASSERT_EQ(Run({"purge", "--state", "completed", "--older-than", "7d"}, &out), 0) << out;
  EXPECT_NE(out.find("purged 1 completed job(s)"), std::string::npos) << out;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE id = " + std::to_string(completed_)),
            0);
  json j = RunJson({"purge", "--state", "failed", "--older-than", "1h", "--json"});
  EXPECT_EQ(j["purged"], 0);
  EXPECT_EQ(Run({"purge", "--state", "completed"}, &out), 2) << out;
  EXPECT_EQ(Run({"purge", "--state", "queued", "--older-than", "1d"}, &out), 2) << out;
  EXPECT_EQ(Run({"purge", "--state", "failed", "--older-than", "soon"}, &out), 2) << out;
}

TEST_F(OpsCli, IncidentsResolveThroughTheFunctions) {
  const auto id = QueryInt(db_,
                           "INSERT INTO uppzy.incidents (kind, http_status, api_key_fingerprint) VALUES "
                           "('unauthorized', 401, 'fp') RETURNING id");
  std::string out;
  EXPECT_EQ(Run({"incidents", "resolve", "424242"}, &out), 1);
  EXPECT_NE(out.find("424242"), std::string::npos) << out;
  EXPECT_EQ(Run({"incidents", "resolve", std::to_string(id)}, &out), 0) << out;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL"), 0);
}

TEST_F(OpsCli, ADatabaseThatIsDownIsAFailureNotAUsageError) {
  std::string out;
  EXPECT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "stats"},
                       {{"DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"}}, &out),
      1)
      << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "stats"}, {}, &out), 2) << "DATABASE_URL missing: " << out;
}

}  // namespace
}  // namespace uppzy
