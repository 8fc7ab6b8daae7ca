// What an app can INSERT (migrations/0007_input_limits.sql): each rule refuses a bad row with its named
// constraint, ordinary text (emoji, CJK, leading spaces) still goes in, the worker's own SQL and the
// operator functions still work, and a database that already holds rows breaking the rules migrates.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "support/support.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using test::ErrorOf;
using test::Exec;
using test::MigrateUpTo;
using test::Query;
using test::QueryInt;

struct Refused {
  const char* sql;
  const char* constraint;
};

class InputLimits : public ::testing::TestWithParam<Refused> {
 protected:
  static void SetUpTestSuite() {
    db_ = new std::string(test::MigratedDatabase());
    job_ = QueryInt(*db_,
                    "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id) "
                    "VALUES ('s', 'm', 'polling', 1, 'req_1') RETURNING id");
  }
  static std::string* db_;
  static long long job_;
};
std::string* InputLimits::db_ = nullptr;
long long InputLimits::job_ = 0;

TEST_P(InputLimits, RefusedWithTheNamedConstraint) {
  const long long before = QueryInt(
      *db_,
      "SELECT (SELECT count(*) FROM uppzy.chat_jobs) + (SELECT count(*) FROM uppzy.session_closes) + "
      "(SELECT count(*) FROM uppzy.chat_feedback)");
  std::string sql = GetParam().sql;
  const auto at = sql.find("$JOB");
  if (at != std::string::npos) sql.replace(at, 4, std::to_string(job_));
  const std::string err = ErrorOf(*db_, sql);
  ASSERT_FALSE(err.empty()) << "accepted: " << sql;
  EXPECT_NE(err.find(GetParam().constraint), std::string::npos) << err;
  EXPECT_EQ(QueryInt(*db_,
                     "SELECT (SELECT count(*) FROM uppzy.chat_jobs) + (SELECT count(*) FROM "
                     "uppzy.session_closes) + (SELECT count(*) FROM uppzy.chat_feedback)"),
            before);
}

const Refused kRefused[] = {
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', E'\\t\\n')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', E' \\t \\r\\n ')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\00A0')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\200B')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', "
     "U&'\\FEFF\\3000\\2028\\202F\\205F\\1680')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\0085\\0001\\001F\\007F\\200D')",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\3164\\2800\\+0E0020')",
     "chat_jobs_message_not_blank"},
    // Past the first 64 characters (0015 reads those first, then the whole message when all are blank).
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', repeat(U&'\\00A0 ', 100))",
     "chat_jobs_message_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', '')", "chat_jobs_message_length"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', repeat('a', 8001))",
     "chat_jobs_message_length"},
    // 8,001 characters of two bytes: the byte length alone does not settle it (0015).
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', repeat(U&'\\00E9', 8001))",
     "chat_jobs_message_length"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('   ', 'm')",
     "chat_jobs_session_id_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES (E'\\t', 'm')",
     "chat_jobs_session_id_not_blank"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message) VALUES (U&'\\00A0\\200B', 'm')",
     "chat_jobs_session_id_not_blank"},
    // {"x": "a…"} is 9 bytes of text around the string: 65,528 of them make 65,537 bytes.
    {"INSERT INTO uppzy.chat_jobs (session_id, message, metadata) "
     "VALUES ('s', 'm', jsonb_build_object('x', repeat('a', 65528)))",
     "chat_jobs_metadata_size"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message, metadata) "
     "VALUES ('s', 'm', jsonb_build_object('x', repeat('a', 50 * 1024 * 1024)))",
     "chat_jobs_metadata_size"},
    {"UPDATE uppzy.chat_jobs SET metadata = jsonb_build_object('x', repeat('a', 70000)) WHERE id = $JOB",
     "chat_jobs_metadata_size"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message, run_at) VALUES ('s', 'm', 'infinity')",
     "chat_jobs_run_at_finite"},
    {"INSERT INTO uppzy.chat_jobs (session_id, message, run_at) VALUES ('s', 'm', '-infinity')",
     "chat_jobs_run_at_finite"},
    {"UPDATE uppzy.chat_jobs SET cancel_requested_at = 'infinity' WHERE id = $JOB",
     "chat_jobs_cancel_requested_at_finite"},
    {"INSERT INTO uppzy.session_closes (session_id) VALUES (U&'\\2003 ')",
     "session_closes_session_id_not_blank"},
    {"SELECT uppzy.close_session('  ')", "session_closes_session_id_not_blank"},
    {"INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback) VALUES (E'\\n', 'req_9', 'good')",
     "chat_feedback_session_id_not_blank"},
};

INSTANTIATE_TEST_SUITE_P(Rules, InputLimits, ::testing::ValuesIn(kRefused),
                         [](const ::testing::TestParamInfo<Refused>& row) {
                           return std::to_string(row.index) + "_" + row.param.constraint;
                         });

TEST(InputLimitsAccepted, OrdinaryTextMetadataAndTimesStillGoIn) {
  const std::string db = test::MigratedDatabase();
  const char* kAccepted[] = {
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'What is the refund policy?')",
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\+01F600')",     // emoji
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\2764\\FE0F')",  // ❤️
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\+01F468\\200D\\+01F469')",  // ZWJ
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('会话-1', '退款政策是什么？')",       // CJK
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'ما هي سياسة الاسترداد؟')",
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES (' s ', '   leading spaces')",
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\00A0\\200Bx\\3000')",
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', E'line one\\n\\tline two')",
      // 8,000 characters of two bytes (16,000 bytes) is within the limit, and 70 blanks before a word
      // are not a blank message.
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', repeat(U&'\\00E9', 8000))",
      "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', repeat(U&'\\00A0', 70) || 'x')",
      // Exactly 65,536 bytes of text is the limit, and is accepted.
      "INSERT INTO uppzy.chat_jobs (session_id, message, metadata) "
      "VALUES ('s', 'm', jsonb_build_object('x', repeat('a', 65527)))",
      "INSERT INTO uppzy.chat_jobs (session_id, message, metadata) VALUES ('s', 'm', '{\"user_id\": 17}')",
      // Finite times, however odd, are times.
      "INSERT INTO uppzy.chat_jobs (session_id, message, run_at) VALUES ('s', 'm', now() + interval '1 day')",
      "INSERT INTO uppzy.chat_jobs (session_id, message, run_at) VALUES ('s', 'm', '0044-03-15 12:00:00+00 "
      "BC')",
      "SELECT uppzy.close_session('user-17-conv-3')",
      "INSERT INTO uppzy.session_closes (session_id) VALUES (U&'\\+01F600')",
  };
  for (const char* sql : kAccepted) EXPECT_EQ(ErrorOf(db, sql), "") << sql;
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs"), 15);
  EXPECT_EQ(Query(db,
                  "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint "
                  "WHERE connamespace = 'uppzy'::regnamespace AND NOT convalidated"),
            "")
      << "on a fresh database every constraint is validated";
}

TEST(InputLimitsAccepted, IsBlankHasOneDefinition) {
  const std::string db = test::MigratedDatabase();
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank('')::text"), "true");
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank(U&'\\0009\\000A\\000D\\0020\\00A0\\200B\\FEFF')::text"), "true");
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank(U&'\\FE0F')::text"), "true");
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank('x')::text"), "false");
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank(U&'\\+01F600')::text"), "false");
  EXPECT_EQ(Query(db, "SELECT uppzy.is_blank(NULL) IS NULL"), "t");
}

// The worker's claim and the operator functions on rows the rules touch.
TEST(InputLimitsAccepted, WorkerAndOperatorFunctionsStillWork) {
  const std::string db = test::MigratedDatabase();
  // An old row with metadata over the limit (as if from before 0007): the worker still claims it.
  Exec(db, "ALTER TABLE uppzy.chat_jobs DISABLE TRIGGER chat_jobs_metadata_size");
  const long long big =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, metadata) VALUES ('s', 'm', "
               "jsonb_build_object('x', repeat('a', 200000))) RETURNING id");
  Exec(db, "ALTER TABLE uppzy.chat_jobs ENABLE TRIGGER chat_jobs_metadata_size");
  Store store(db);
  auto claimed = store.JobsClaimQueued("w-1", 30000, 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, big);

  const long long done =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, finished_at, error_kind) "
               "VALUES ('s', 'm', 'failed', 1, now(), 'server_error') RETURNING id");
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.retry_jobs(ARRAY[" + std::to_string(done) + "]::bigint[])"), 1);
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(done)), "queued");
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.cancel_jobs(ARRAY[" + std::to_string(done) + "]::bigint[])"), 1);
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(done)), "cancelled");
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.retry_failed()"), 0);
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.purge_jobs('cancelled', interval '0')"), 1);
}

// The rules hold for the app's own role (migrations/roles.sql), whose grants say nothing of them.
TEST(InputLimitsAccepted, TheAppRoleMeetsTheSameRules) {
  const std::string db = test::MigratedDatabase();
  OpsStore(db).RolesApply();
  EXPECT_EQ(ErrorOf(db,
                    "SET ROLE uppzy_app; INSERT INTO uppzy.chat_jobs (session_id, message, metadata) "
                    "VALUES (' s', U&' \\+01F600', '{\"user_id\": 17}')"),
            "");
  EXPECT_NE(ErrorOf(db,
                    "SET ROLE uppzy_app; INSERT INTO uppzy.chat_jobs (session_id, message) "
                    "VALUES ('s', U&'\\200B\\00A0')")
                .find("chat_jobs_message_not_blank"),
            std::string::npos);
  EXPECT_NE(ErrorOf(db,
                    "SET ROLE uppzy_app; INSERT INTO uppzy.chat_jobs (session_id, message, metadata) "
                    "VALUES ('s', 'm', jsonb_build_object('x', repeat('a', 70000)))")
                .find("chat_jobs_metadata_size"),
            std::string::npos);
  EXPECT_NE(ErrorOf(db, "SET ROLE uppzy_app; SELECT uppzy.close_session(E'\\t')")
                .find("session_closes_session_id_not_blank"),
            std::string::npos);
}

TEST(InputLimitsUpgrade, ADatabaseWithRowsBreakingTheRulesStillMigrates) {
  const std::string db = test::FreshDatabase();
  MigrateUpTo(db, "0007");
  const long long big_queued =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, metadata) VALUES "
               "('s', 'm', jsonb_build_object('x', repeat('a', 1000000))) RETURNING id");
  const long long big_done = QueryInt(
      db,
      "INSERT INTO uppzy.chat_jobs (session_id, message, metadata, state, attempts, finished_at, answer) "
      "VALUES ('s', 'm', jsonb_build_object('x', repeat('a', 1000000)), 'completed', 1, now(), 'a') "
      "RETURNING id");
  const long long blank_queued =
      QueryInt(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', E'\\t\\n') RETURNING id");
  const long long blank_polling =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, "
               "request_id, locked_by, lease_expires_at) VALUES (U&'\\00A0', 'm', "
               "'polling', 1, 'req_1', 'w-old', now()) RETURNING id");
  const long long never = QueryInt(
      db,
      "INSERT INTO uppzy.chat_jobs (session_id, message, run_at) VALUES ('s', 'm', 'infinity') RETURNING id");
  const long long blank_done =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, "
               "finished_at, error_kind) VALUES ('s', U&'\\200B', 'failed', 1, now(), "
               "'server_error') RETURNING id");
  const long long close =
      QueryInt(db, "INSERT INTO uppzy.session_closes (session_id) VALUES (' ') RETURNING id");

  Store store(db);
  const auto applied = store.Migrate();
  ASSERT_FALSE(applied.empty());  // 0007 and every later migration
  EXPECT_EQ(applied[0], "0007_input_limits.sql");
  EXPECT_TRUE(store.Migrate().empty());

  auto job = [&](long long id, const std::string& column) {
    return Query(db, "SELECT " + column + " FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
  };
  // Old large metadata is kept as it was, and the row still runs.
  EXPECT_EQ(job(big_queued, "state"), "queued");
  EXPECT_EQ(job(big_queued, "octet_length(metadata::text)"), "1000009");
  EXPECT_EQ(job(big_done, "state"), "completed");
  // Unfinished rows that break a rule could never be answered, and would wedge the worker's batched
  // writes: they are finished as failed, saying why.
  for (long long id : {blank_queued, blank_polling, never}) {
    EXPECT_EQ(job(id, "state"), "failed") << id;
    EXPECT_EQ(job(id, "error_kind"), "bad_request") << id;
    EXPECT_NE(job(id, "last_error").find("0007_input_limits"), std::string::npos) << id;
    EXPECT_EQ(job(id, "locked_by"), "") << id;
    EXPECT_EQ(job(id, "errors -> -1 ->> 'kind'"), "bad_request") << id;
  }
  EXPECT_EQ(job(never, "isfinite(run_at)::text"), "true");
  EXPECT_EQ(job(blank_done, "state"), "failed");
  EXPECT_EQ(job(blank_done, "error_kind"), "server_error") << "finished rows are left alone";
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.session_closes WHERE id = " + std::to_string(close)),
            "failed");

  // Constraints that old rows still break stay NOT VALID; the others are validated. All hold for new rows.
  EXPECT_EQ(Query(db,
                  "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint "
                  "WHERE connamespace = 'uppzy'::regnamespace AND NOT convalidated"),
            "chat_jobs_message_not_blank,chat_jobs_session_id_not_blank,session_closes_session_id_not_blank");
  EXPECT_NE(ErrorOf(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', U&'\\00A0')")
                .find("chat_jobs_message_not_blank"),
            std::string::npos);
  EXPECT_NE(ErrorOf(db,
                    "INSERT INTO uppzy.chat_jobs (session_id, message, metadata) VALUES ('s', 'm', "
                    "jsonb_build_object('x', repeat('a', 70000)))")
                .find("chat_jobs_metadata_size"),
            std::string::npos);

  // The worker claims the old large row; an operator may retry the old large finished one.
  auto claimed = store.JobsClaimQueued("w-1", 30000, 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].id, big_queued);
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.retry_jobs(ARRAY[" + std::to_string(big_done) + "]::bigint[])"), 1);
  // Retrying a finished row with a blank message is refused by the constraint: Uppzy would refuse it too.
  EXPECT_NE(ErrorOf(db, "SELECT uppzy.retry_jobs(ARRAY[" + std::to_string(blank_done) + "]::bigint[])")
                .find("chat_jobs_message_not_blank"),
            std::string::npos);
}

}  // namespace
}  // namespace uppzy
