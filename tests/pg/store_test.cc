// The store against a real PostgreSQL: migrations, constraints, claims, fencing, rescue, incidents.
#include <gtest/gtest.h>

#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "support/support.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using test::Exec;
using test::Query;
using test::QueryInt;

// The decision after an HTTP 503 on a submission with attempts left.
Transition Http503Retry(TimePoint now) {
  Transition t;
  t.action = Action::kRetry;
  t.at = now;
  t.error_kind = ErrorKind::kServerError;
  t.http_status = 503;
  t.message = "HTTP 503";
  return t;
}

// Every payload one channel delivers to a LISTENing connection.
struct Collector : pqxx::notification_receiver {
  using pqxx::notification_receiver::notification_receiver;
  void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
  std::vector<std::string> payloads;
};

TEST(Migrations, ApplyFromScratchThenTwiceIsHarmless) {
  const std::string db = test::FreshDatabase();
  Store store(db);
  auto first = store.Migrate();
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.front(), "0001_chat_jobs.sql");
  EXPECT_TRUE(store.Migrate().empty());
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.schema_migrations"),
            static_cast<long long>(first.size()));
  EXPECT_EQ(Query(db, "SELECT to_regclass('uppzy.chat_jobs')::text"), "uppzy.chat_jobs");
}

// The write that stores request_id (submitting -> polling) and a lease renewal change no column an
// index reads, so PostgreSQL makes them HOT updates: no index entry, the new version on its page
// (migration 0013). An index that read `state` again would silently end that; this says which one.
TEST(Migrations, TheAcceptedWriteAndRenewalsTouchNoIndex) {
  const std::string db = test::MigratedDatabase();
  EXPECT_EQ(Query(db,
                  "SELECT coalesce(string_agg(c.relname, ', '), 'none') FROM pg_index i "
                  "JOIN pg_class c ON c.oid = i.indexrelid "
                  "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'state' "
                  "WHERE i.indrelid = 'uppzy.chat_jobs'::regclass AND (a.attnum = ANY (i.indkey) "
                  "OR pg_get_expr(i.indpred, i.indrelid) ~ '\\mstate\\M' "
                  "OR pg_get_expr(i.indexprs, i.indrelid) ~ '\\mstate\\M')"),
            "none");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, locked_by, lease_expires_at) "
       "VALUES ('s', 'm', 'submitting', 1, 'w', now() + interval '30 s')");
  EXPECT_THROW(Exec(db, "UPDATE uppzy.chat_jobs SET phase = 'completed'"), pqxx::sql_error)
      << "phase is generated from state; nobody writes it";
  pqxx::connection c(db);
  pqxx::work tx(c);
  tx.exec(
      "UPDATE uppzy.chat_jobs SET state = 'polling', request_id = 'req-1', submitted_at = now(), "
      "poll_deadline = now() + interval '45 s', updated_at = now()");
  tx.exec("UPDATE uppzy.chat_jobs SET lease_expires_at = now() + interval '30 s'");
  EXPECT_EQ(
      tx.exec("SELECT pg_stat_get_xact_tuples_hot_updated('uppzy.chat_jobs'::regclass)")[0][0].as<int>(), 2);
  tx.commit();
}

// Upgrading a database with work in every state (0012 and 0013 rewrite triggers, the table and every
// index): nothing is lost, and every kind of row goes on where it was.
TEST(Migrations, UpgradingToThePhaseColumnKeepsEveryRowWhereItWas) {
  const std::string db = test::FreshDatabase();
  test::MigrateUpTo(db, "0012");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, locked_by, "
       "lease_expires_at, answer, error_kind, finished_at) VALUES "
       "('s', 'queued', 'queued', 0, NULL, NULL, NULL, NULL, NULL, NULL), "
       "('s', 'polling', 'polling', 1, 'req-p', 'gone', now() - interval '1 s', NULL, NULL, NULL), "
       "('s', 'submitting', 'submitting', 1, NULL, 'gone', now() - interval '1 s', NULL, NULL, NULL), "
       "('s', 'completed', 'completed', 1, 'req-c', NULL, NULL, 'a', NULL, now() - interval '2 days'), "
       "('s', 'failed', 'failed', 1, NULL, NULL, NULL, NULL, 'server_error', now())");
  Store store(db);
  const auto applied = store.Migrate();
  ASSERT_GE(applied.size(), 2u);
  EXPECT_EQ(applied[0], "0012_no_row_lock_per_write.sql");
  EXPECT_EQ(applied[1], "0013_phase.sql");
  EXPECT_EQ(Query(db, "SELECT string_agg(state || '=' || phase, ' ' ORDER BY id) FROM uppzy.chat_jobs"),
            "queued=queued polling=held submitting=held completed=completed failed=failed");
  EXPECT_EQ(
      Query(db, "SELECT string_agg(state || ':' || jobs, ' ' ORDER BY state) FROM uppzy.chat_job_stats"),
      "cancelled:0 completed:1 failed:1 polling:1 queued:1 retrying:0 submitting:1");
  auto claimed = store.JobsClaimQueued("w", 30000, 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].message, "queued");
  auto adopted = store.JobsAdoptPolling("w", 30000, 10);
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].request_id, "req-p");
  EXPECT_EQ(store.JobsRescueExpiredSubmitting(10), 1);
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.purge_jobs('completed', interval '1 day')"), 1);
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.retry_failed()"), 1);
  EXPECT_EQ(Query(db, "SELECT string_agg(message || '=' || state, ' ' ORDER BY id) FROM uppzy.chat_jobs"),
            "queued=submitting polling=polling submitting=retrying failed=queued");
}

TEST(Migrations, MigrateCommandTwiceSucceeds) {
  const std::string db = test::FreshDatabase();
  std::string out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "migrate"}, {{"DATABASE_URL", db}}, &out), 0) << out;
  EXPECT_NE(out.find("applied 0001_chat_jobs.sql"), std::string::npos) << out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "migrate"}, {{"DATABASE_URL", db}}, &out), 0) << out;
  EXPECT_NE(out.find("up to date"), std::string::npos) << out;
}

struct BadInsert {
  const char* columns_and_values;  // appended to INSERT INTO uppzy.chat_jobs
  const char* constraint;
};

class Constraints : public ::testing::TestWithParam<BadInsert> {
 protected:
  static void SetUpTestSuite() { db_ = new std::string(test::MigratedDatabase()); }
  static std::string* db_;
};
std::string* Constraints::db_ = nullptr;

TEST_P(Constraints, RejectBadInsertWithNamedError) {
  const BadInsert& b = GetParam();
  const long long before = QueryInt(*db_, "SELECT count(*) FROM uppzy.chat_jobs");
  try {
    Exec(*db_, std::string("INSERT INTO uppzy.chat_jobs ") + b.columns_and_values);
    FAIL() << "accepted: " << b.columns_and_values;
  } catch (const pqxx::sql_error& e) {
    EXPECT_NE(std::string(e.what()).find(b.constraint), std::string::npos) << e.what();
  }
  EXPECT_EQ(QueryInt(*db_, "SELECT count(*) FROM uppzy.chat_jobs"), before) << "nothing may be enqueued";
}

const BadInsert kBadInserts[] = {
    {"(session_id, message, state) VALUES ('s', 'm', 'running')", "chat_jobs_state_valid"},
    // phase follows state; nobody writes it (0013), so an app cannot file a row under another phase.
    {"(session_id, message, phase) VALUES ('s', 'm', 'completed')",
     "non-DEFAULT value into column \"phase\""},
    {"(session_id, message, state) VALUES ('s', 'm', 'cancelled')", "chat_jobs_finished_at_iff_terminal"},
    {"(session_id, message, finished_at) VALUES ('s', 'm', now())", "chat_jobs_finished_at_iff_terminal"},
    {"(session_id, message, attempts, max_attempts, state, finished_at, error_kind) "
     "VALUES ('s', 'm', 4, 3, 'failed', now(), 'network')",
     "chat_jobs_attempts_range"},
    {"(session_id, message, attempts) VALUES ('s', 'm', -1)", "chat_jobs_attempts_range"},
    {"(session_id, message, max_attempts) VALUES ('s', 'm', 0)", "chat_jobs_max_attempts_range"},
    {"(session_id, message, max_attempts) VALUES ('s', 'm', 101)", "chat_jobs_max_attempts_range"},
    {"(session_id, message) VALUES ('s', '')", "chat_jobs_message_length"},
    {"(session_id, message) VALUES ('s', repeat('x', 8001))", "chat_jobs_message_length"},
    {"(session_id, message) VALUES ('s', '   ')", "chat_jobs_message_not_blank"},
    {"(session_id, message) VALUES ('', 'm')", "chat_jobs_session_id_length"},
    {"(session_id, message) VALUES (repeat('s', 256), 'm')", "chat_jobs_session_id_length"},
    {"(session_id, message, response_language) VALUES ('s', 'm', 'english please')",
     "chat_jobs_response_language_tag"},
    {"(session_id, message, response_language) VALUES ('s', 'm', '')", "chat_jobs_response_language_tag"},
    {"(session_id, message, metadata) VALUES ('s', 'm', '[1]')", "chat_jobs_metadata_object"},
    {"(session_id, message, attempts, max_attempts) VALUES ('s', 'm', 3, 3)",
     "chat_jobs_waiting_has_attempt_left"},
    {"(session_id, message, state, lease_expires_at) VALUES ('s', 'm', 'polling', now())",
     "chat_jobs_polling_has_request_id"},
};

INSTANTIATE_TEST_SUITE_P(Table, Constraints, ::testing::ValuesIn(kBadInserts));

TEST(Constraints, NullSessionAndLanguageTagsAccepted) {
  const std::string db = test::MigratedDatabase();
  EXPECT_THROW(Exec(db, "INSERT INTO uppzy.chat_jobs (message) VALUES ('m')"), pqxx::sql_error);
  for (const char* tag : {"en", "de", "pt-BR", "zh-Hant-TW"}) {
    Exec(db, std::string(
                 "INSERT INTO uppzy.chat_jobs (session_id, message, response_language) VALUES ('s','m','") +
                 tag + "')");
  }
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs"), 4);
}

TEST(Enqueue, JobKeyMakesEnqueueIdempotent) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  NewJob job;
  job.session_id = "s";
  job.message = "m";
  job.job_key = "job_48291";
  auto a = store.JobsEnqueue(job);
  auto b = store.JobsEnqueue(job);
  EXPECT_TRUE(a.created);
  EXPECT_FALSE(b.created);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs"), 1);
}

// An idle worker schedules its next rescue pass by the first lease another worker holds (issue 13):
// none held -> nothing; its own rows do not count; another's lease -> about its time left.
TEST(Leases, NextExpiryIsTheFirstLeaseAnotherWorkerHolds) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  EXPECT_FALSE(store.LeasesNextExpiry("idle").has_value());
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', 'm' || g FROM generate_series(1, 2) g");
  ASSERT_EQ(store.JobsClaimQueued("idle", 60000, 1).size(), 1u);
  EXPECT_FALSE(store.LeasesNextExpiry("idle").has_value()) << "its own row is not another worker's";
  ASSERT_EQ(store.JobsClaimQueued("other", 5000, 1).size(), 1u);
  const auto left = store.LeasesNextExpiry("idle");
  ASSERT_TRUE(left.has_value());
  EXPECT_GT(left->count(), 3000);
  EXPECT_LE(left->count(), 5000);
  Exec(db,
       "UPDATE uppzy.chat_jobs SET lease_expires_at = now() - interval '1 second' WHERE locked_by = 'other'");
  EXPECT_LT(store.LeasesNextExpiry("idle")->count(), 0) << "a lease that ran out already";
}

// Rescue and adoption read every held row only when a lease may have run out unnoticed (issue 13,
// migration 0016): a worker missed a heartbeat or (re)started recently. Otherwise a pass adopts only
// the rows handed back, through an index, and a live worker's expired row waits for the full pass.
TEST(Leases, EveryHeldRowIsReadOnlyWhenALeaseMayHaveRunOut) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  const Millis window(30000);
  EXPECT_FALSE(store.LeasesSweepDue(window)) << "no worker ever ran";

  store.WorkersHeartbeat("w1", "host", 1, "", {}, 30000, 0, "closed", /*starting=*/true);
  EXPECT_TRUE(store.LeasesSweepDue(window)) << "a worker started: its id may be a dead process's";
  Exec(db, "UPDATE uppzy.workers SET started_at = now() - interval '1 hour'");
  EXPECT_FALSE(store.LeasesSweepDue(window)) << "a worker that started long ago and heartbeats";
  store.WorkersHeartbeat("w1", "host", 1, "", {}, 30000, 0, "closed", false);
  EXPECT_FALSE(store.LeasesSweepDue(window)) << "a heartbeat is not a start";

  Exec(db, "UPDATE uppzy.workers SET heartbeat_at = now() - interval '20 seconds'");
  EXPECT_TRUE(store.LeasesSweepDue(window)) << "missed a heartbeat (due every 10 s, lease 30 s)";
  Exec(db, "UPDATE uppzy.workers SET heartbeat_at = now() - interval '2 hours'");
  EXPECT_FALSE(store.LeasesSweepDue(window)) << "gone for good: its leases ran out long ago";
  store.WorkersHeartbeat("w1", "host", 1, "", {}, 30000, 0, "closed", true);
  EXPECT_TRUE(store.LeasesSweepDue(window)) << "the same id started again";
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.workers WHERE started_at > now() - interval '1 minute'"),
            1);

  // Two polling rows whose leases ran out: one a dead worker still holds, one handed back.
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'held'), ('s', 'handed back')");
  ASSERT_EQ(store.JobsClaimQueued("dead", 30000, 2).size(), 2u);
  Exec(db,
       "UPDATE uppzy.chat_jobs SET state = 'polling', request_id = 'req-' || id, submitted_at = now(), "
       "lease_expires_at = now() - interval '1 second', "
       "locked_by = CASE WHEN message = 'held' THEN 'dead' END");
  auto handed_back = store.JobsAdoptHandedBack("w1", 30000, ClaimScope::DefaultOnly("", 10), 10);
  ASSERT_EQ(handed_back.size(), 1u);
  EXPECT_EQ(handed_back[0].message, "handed back");
  EXPECT_TRUE(store.JobsAdoptHandedBack("w1", 30000, ClaimScope::DefaultOnly("", 10), 10).empty())
      << "a row a worker still holds is not handed back, however old its lease";
  auto all = store.JobsAdoptPolling("w1", 30000, 10);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].message, "held");
  EXPECT_EQ(Query(db, "SELECT string_agg(DISTINCT locked_by, ',') FROM uppzy.chat_jobs"), "w1");
}

TEST(Claim, EightThreadsTakeEachRowExactlyOnce) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's' || g, 'm' FROM generate_series(1, 2000) "
       "g");
  std::mutex mu;
  std::vector<int64_t> all;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Store store(db);
      while (true) {
        auto jobs = store.JobsClaimQueued("w" + std::to_string(t), 30000, 37);
        if (jobs.empty()) break;
        std::lock_guard<std::mutex> lock(mu);
        for (const auto& j : jobs) all.push_back(j.id);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> unique(all.begin(), all.end());
  EXPECT_EQ(all.size(), 2000u);
  EXPECT_EQ(unique.size(), 2000u);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'submitting' AND attempts = 1"),
            2000);
}

TEST(Claim, HigherPriorityFirstAndFutureRunAtWaits) {
  const std::string db = test::MigratedDatabase();
  Exec(
      db,
      "INSERT INTO uppzy.chat_jobs (session_id, message, priority) VALUES ('s', 'low', 0), ('s', 'high', 5)");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, priority, run_at) "
       "VALUES ('s', 'later', 9, now() + interval '1 hour')");
  Store store(db);
  auto jobs = store.JobsClaimQueued("w", 30000, 10);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].message, "high");
  EXPECT_EQ(jobs[1].message, "low");
}

TEST(Fencing, GuardedWritesRefuseRowHeldByAnotherWorker) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')");
  Store store(db);
  auto jobs = store.JobsClaimQueued("worker-a", 30000, 1);
  ASSERT_EQ(jobs.size(), 1u);
  HeldJob h = HeldJob::Of(jobs[0]);
  const auto now = Clock::now();

  // Worker B never claimed it: refused, row untouched.
  auto r =
      store.JobsApplyWrites("worker-b", {WriteAccepted(h, "req-b", now, now + std::chrono::seconds(45))});
  EXPECT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.chat_jobs"), "submitting");

  // The holder succeeds, then a stale write expecting the old state is refused.
  r = store.JobsApplyWrites("worker-a", {WriteAccepted(h, "req-a", now, now + std::chrono::seconds(45))});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(Query(db, "SELECT state || ' ' || request_id FROM uppzy.chat_jobs"), "polling req-a");
  r = store.JobsApplyWrites("worker-a", {WriteAccepted(h, "req-x", now, now)});
  EXPECT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(Query(db, "SELECT request_id FROM uppzy.chat_jobs"), "req-a");
}

TEST(Fencing, AcceptedThenCompletedInOneBatchApplyInOrder) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')");
  Store store(db);
  HeldJob h = HeldJob::Of(store.JobsClaimQueued("w", 30000, 1).at(0));
  const auto now = Clock::now();
  JobWrite accepted = WriteAccepted(h, "req-1", now, now + std::chrono::seconds(45));
  h.row_state = JobState::kPolling;
  h.request_id = "req-1";
  h.polls = 2;
  JobWrite done = WriteCompleted(h, "echo: m", R"({"confidence_score":0.9})");
  auto r = store.JobsApplyWrites("w", {accepted, done});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(Query(db,
                  "SELECT concat_ws(' ', state, request_id, answer, polls, result->>'confidence_score', "
                  "locked_by IS NULL, finished_at IS NOT NULL) FROM uppzy.chat_jobs"),
            "completed req-1 echo: m 2 0.9 t t");
}

TEST(Fencing, RetryAppendsErrorAndFailsOnLastAttempt) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message, max_attempts) VALUES ('s', 'm', 2)");
  Store store(db);
  const auto now = Clock::now();
  Transition t = Http503Retry(now);
  HeldJob h = HeldJob::Of(store.JobsClaimQueued("w", 30000, 1).at(0));
  store.JobsApplyWrites("w", {WriteFinishedAttempt(h, t, now)});
  EXPECT_EQ(
      Query(db,
            "SELECT concat_ws(' ', state, attempts, error_kind, last_http_status, "
            "jsonb_array_length(errors), errors->0->>'kind', errors->0->>'attempt') FROM uppzy.chat_jobs"),
      "retrying 1 server_error 503 1 server_error 1");
  h = HeldJob::Of(store.JobsClaimQueued("w", 30000, 1).at(0));
  EXPECT_EQ(h.attempt, 2);
  t.action = Action::kFail;
  store.JobsApplyWrites("w", {WriteFinishedAttempt(h, t, now)});
  EXPECT_EQ(
      Query(db,
            "SELECT concat_ws(' ', state, attempts, jsonb_array_length(errors), finished_at IS NOT NULL) "
            "FROM uppzy.chat_jobs"),
      "failed 2 2 t");
}

TEST(HandBack, SubmissionGoesBackUnchargedAndPollingKeepsRequestId) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'a'), ('s', 'b')");
  Store store(db);
  auto jobs = store.JobsClaimQueued("w", 30000, 2);
  ASSERT_EQ(jobs.size(), 2u);
  const auto now = Clock::now();
  HeldJob a = HeldJob::Of(jobs[0]);
  HeldJob b = HeldJob::Of(jobs[1]);
  store.JobsApplyWrites("w", {WriteAccepted(b, "req-b", now, now + std::chrono::seconds(45))});
  b.row_state = JobState::kPolling;
  b.request_id = "req-b";
  auto r = store.JobsApplyWrites("w", {WriteHandBack(a, std::nullopt), WriteHandBack(b, std::nullopt)});
  EXPECT_EQ(r.applied.size(), 2u);
  EXPECT_EQ(
      Query(
          db,
          "SELECT concat_ws(' ', state, attempts, locked_by IS NULL) FROM uppzy.chat_jobs WHERE message='a'"),
      "queued 0 t");
  EXPECT_EQ(
      Query(
          db,
          "SELECT concat_ws(' ', state, attempts, request_id, locked_by IS NULL, lease_expires_at <= now()) "
          "FROM uppzy.chat_jobs WHERE message='b'"),
      "polling 1 req-b t t");
  // Another worker adopts the polling row at once (the cheap adoption a wake-up runs), with its
  // request_id, without a new attempt.
  auto adopted = store.JobsAdoptHandedBack("other", 30000, ClaimScope::DefaultOnly("", 10), 10);
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].request_id, "req-b");
  EXPECT_EQ(adopted[0].attempt, 1);
  EXPECT_EQ(adopted[0].state, JobState::kPolling);
}

// A cancellation asked for while a worker held the row takes effect when the worker lets go of it: in
// the worker's own batched write (0012 does this after the write, not before it), and the app hears
// each finish once.
TEST(HandBack, ARowAskedToCancelWhileHeldEndsCancelledWhenTheWorkerLetsGo) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'a'), ('s', 'b')");
  Store store(db);
  auto jobs = store.JobsClaimQueued("w", 30000, 2);
  ASSERT_EQ(jobs.size(), 2u);
  pqxx::connection listen(db);
  Collector finished(listen, "uppzy_chat_jobs");
  Exec(db, "UPDATE uppzy.chat_jobs SET cancel_requested_at = now()");
  EXPECT_EQ(Query(db, "SELECT string_agg(state, ' ' ORDER BY message) FROM uppzy.chat_jobs"),
            "submitting submitting")
      << "a held row keeps going until its worker lets go";
  const auto now = Clock::now();
  Transition t = Http503Retry(now);
  auto r = store.JobsApplyWrites("w", {WriteHandBack(HeldJob::Of(jobs[0]), std::nullopt),
                                       WriteFinishedAttempt(HeldJob::Of(jobs[1]), t, now)});
  EXPECT_EQ(r.applied.size(), 2u);
  EXPECT_EQ(Query(db,
                  "SELECT string_agg(concat_ws(' ', state, error_kind, locked_by IS NULL, "
                  "errors->(jsonb_array_length(errors) - 1)->>'kind'), ', ' ORDER BY message) "
                  "FROM uppzy.chat_jobs"),
            "cancelled cancelled t cancelled, cancelled cancelled t cancelled");
  test::WaitFor(
      [&] {
        listen.get_notifs();
        return finished.payloads.size() >= 2;
      },
      std::chrono::seconds(5));
  ASSERT_EQ(finished.payloads.size(), 2u);
  for (const auto& p : finished.payloads) EXPECT_EQ(nlohmann::json::parse(p)["state"], "cancelled");
}

TEST(Rescue, ExpiredSubmittingRowsRetryWithLeaseExpired) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, max_attempts) VALUES ('s', 'a', 3), ('s', 'b', 1)");
  Store store(db);
  ASSERT_EQ(store.JobsClaimQueued("crashed", 1000, 10).size(), 2u);
  EXPECT_EQ(store.JobsRescueExpiredSubmitting(100), 0) << "a live lease is never rescued";
  Exec(db, "UPDATE uppzy.chat_jobs SET lease_expires_at = now() - interval '1 second'");
  EXPECT_EQ(store.JobsRescueExpiredSubmitting(100), 2);
  EXPECT_EQ(
      Query(db,
            "SELECT concat_ws(' ', state, attempts, error_kind, errors->0->>'kind') FROM uppzy.chat_jobs "
            "WHERE message='a'"),
      "retrying 1 lease_expired lease_expired");
  EXPECT_EQ(Query(db, "SELECT concat_ws(' ', state, error_kind) FROM uppzy.chat_jobs WHERE message='b'"),
            "failed lease_expired");
}

TEST(Leases, RenewExtendsOnlyRowsStillHeld) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', 'm' FROM generate_series(1, 3)");
  Store store(db);
  auto jobs = store.JobsClaimQueued("w", 1000, 3);
  std::vector<int64_t> ids;
  for (const auto& j : jobs) ids.push_back(j.id);
  Exec(db, "UPDATE uppzy.chat_jobs SET locked_by = 'thief' WHERE id = " + std::to_string(ids[0]));
  auto renewed = store.JobsRenewLeases("w", ids, 60000);
  EXPECT_EQ(renewed.size(), 2u);
  EXPECT_EQ(
      QueryInt(db,
               "SELECT count(*) FROM uppzy.chat_jobs WHERE lease_expires_at > now() + interval '30 seconds'"),
      2);
}

TEST(Incidents, OneOpenIncidentPerKeyAndResolve) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  auto [id1, created1] = store.IncidentsOpen("unauthorized", 401, "HTTP 401", "site", "abc123", "w1");
  auto [id2, created2] = store.IncidentsOpen("unauthorized", 401, "HTTP 401", "site", "abc123", "w2");
  EXPECT_TRUE(created1);
  EXPECT_FALSE(created2);
  EXPECT_EQ(id1, id2);
  EXPECT_EQ(store.IncidentsOpenFor("abc123"), id1);
  EXPECT_EQ(store.IncidentsOpenFor("other"), std::nullopt);
  EXPECT_TRUE(store.IncidentsResolve(id1));
  EXPECT_FALSE(store.IncidentsResolve(id1));
  EXPECT_EQ(store.IncidentsOpenFor("abc123"), std::nullopt);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.incidents WHERE api_key_fingerprint = 'abc123'"), 1);
}

TEST(Notify, OneWakeupPerInsertStatementAndFinishPayload) {
  const std::string db = test::MigratedDatabase();
  pqxx::connection listen(db);
  Collector wake(listen, "uppzy_chat_jobs_wakeup");
  Collector finished(listen, "uppzy_chat_jobs");
  listen.get_notifs();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, job_key) "
       "SELECT 's', 'm', 'k' || g FROM generate_series(1, 50) g");
  Exec(db, "UPDATE uppzy.chat_jobs SET state = 'cancelled', finished_at = now() WHERE job_key = 'k7'");
  test::WaitFor(
      [&] {
        listen.get_notifs();
        return !finished.payloads.empty();
      },
      std::chrono::seconds(5));
  EXPECT_EQ(wake.payloads.size(), 1u) << "one NOTIFY per INSERT statement, not per row";
  ASSERT_EQ(finished.payloads.size(), 1u);
  auto j = nlohmann::json::parse(finished.payloads[0]);
  EXPECT_EQ(j["job_key"], "k7");
  EXPECT_EQ(j["state"], "cancelled");
  EXPECT_TRUE(j["id"].is_number());
}

}  // namespace
}  // namespace uppzy
