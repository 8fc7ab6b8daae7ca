// The store under an app that holds row locks, and writes the database refuses: nothing waits on an
// app's lock, nothing is counted applied that was not, and a refused write fails only its own row.
#include <gtest/gtest.h>

#include <chrono>
#include <pqxx/pqxx>
#include <thread>

#include "support/support.h"
#include "uppzy/delivery_store.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using std::chrono::steady_clock;
using test::Exec;
using test::Query;

long long ElapsedMs(steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - since).count();
}

// Fails on the code before the fix: a job whose first write applied and whose second was refused was
// counted as applied, so the refusal was never counted or logged.
TEST(Fencing, JobWhoseSecondWriteIsRefusedCountsAsRefused) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')");
  Store store(db);
  HeldJob h = HeldJob::Of(store.JobsClaimQueued("w", 30000, 1).at(0));
  const auto now = Clock::now();
  JobWrite accepted = WriteAccepted(h, "req-1", now, now + std::chrono::seconds(45));
  // The second write expects the wrong attempt: the guard refuses it.
  h.row_state = JobState::kPolling;
  h.attempt += 1;
  JobWrite stale = WriteCompleted(h, "answer", "{}");
  ApplyResult r = store.JobsApplyWrites("w", {accepted, stale});
  EXPECT_TRUE(r.applied.empty());
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(r.refused[0], h.id);
  EXPECT_EQ(Query(db, "SELECT state || ' ' || request_id FROM uppzy.chat_jobs"), "polling req-1");
}

// The batched write passes every column as a typed array's text form: an answer with the characters
// that array syntax gives meaning to is stored exactly, and one no PostgreSQL text can hold (NUL) is
// refused with a clear, non-transient error (the coordinator then fails that row alone).
TEST(TypedArrays, AnswersWithArraySyntaxAreStoredExactlyAndNulIsRefused) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', 'm' || g FROM generate_series(1, 2) g");
  Store store(db);
  auto claimed = store.JobsClaimQueued("w", 30000, 2);
  ASSERT_EQ(claimed.size(), 2u);
  const auto now = Clock::now();
  std::vector<JobWrite> writes;
  for (const auto& c : claimed) {
    HeldJob h = HeldJob::Of(c);
    writes.push_back(WriteAccepted(h, "req-" + std::to_string(c.id), now, now + std::chrono::seconds(45)));
  }
  ASSERT_EQ(store.JobsApplyWrites("w", writes).applied.size(), 2u);
  const std::string tricky = "NULL, {a,\"b\"} \\ \"quoted\" ,} \u00e9 \xE2\x82\xAC";
  HeldJob a = HeldJob::Of(claimed[0]);
  a.row_state = JobState::kPolling;
  a.request_id = "req-" + std::to_string(a.id);
  ApplyResult r = store.JobsApplyWrites("w", {WriteCompleted(a, tricky, R"({"k":"{\"x\",NULL}"})")});
  ASSERT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(Query(db, "SELECT answer FROM uppzy.chat_jobs WHERE id = " + std::to_string(a.id)), tricky);
  EXPECT_EQ(Query(db, "SELECT result->>'k' FROM uppzy.chat_jobs WHERE id = " + std::to_string(a.id)),
            "{\"x\",NULL}");

  HeldJob b = HeldJob::Of(claimed[1]);
  b.row_state = JobState::kPolling;
  b.request_id = "req-" + std::to_string(b.id);
  try {
    store.JobsApplyWrites("w", {WriteCompleted(b, std::string("a") + '\0' + "b", "{}")});
    FAIL() << "a NUL in the answer was not refused";
  } catch (const StoreError& e) {
    EXPECT_FALSE(e.transient());
    EXPECT_NE(std::string(e.what()).find("NUL"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(b.id)), "polling");
}

// An app's SELECT ... FOR UPDATE on a held row: the write is deferred at once, not waited on; the
// other rows of the batch are stored; once the lock goes, the deferred write applies.
TEST(AppLocks, WritesSkipARowAnAppHoldsAndApplyItLater) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', 'm' || g FROM generate_series(1, 2) g");
  Store store(db);
  auto claimed = store.JobsClaimQueued("w", 30000, 2);
  ASSERT_EQ(claimed.size(), 2u);
  HeldJob a = HeldJob::Of(claimed[0]);
  HeldJob b = HeldJob::Of(claimed[1]);
  const auto now = Clock::now();

  pqxx::connection app(db);
  pqxx::work app_tx(app);
  app_tx.exec("SELECT id FROM uppzy.chat_jobs WHERE id = " + std::to_string(a.id) + " FOR UPDATE");

  const auto start = steady_clock::now();
  ApplyResult r =
      store.JobsApplyWrites("w", {WriteAccepted(a, "req-a", now, now + std::chrono::seconds(45)),
                                  WriteAccepted(b, "req-b", now, now + std::chrono::seconds(45))});
  EXPECT_LT(ElapsedMs(start), 1500) << "the write waited on the app's lock";
  ASSERT_EQ(r.deferred.size(), 1u);
  EXPECT_EQ(r.deferred[0], a.id);
  ASSERT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(r.applied[0], b.id);
  EXPECT_TRUE(r.refused.empty());
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(b.id)), "polling");

  // Lease renewal skips the locked row instead of waiting.
  const auto renew_start = steady_clock::now();
  auto renewed = store.JobsRenewLeases("w", {a.id}, 30000);
  EXPECT_LT(ElapsedMs(renew_start), 1500);
  EXPECT_TRUE(renewed.empty());

  app_tx.commit();
  r = store.JobsApplyWrites("w", {WriteAccepted(a, "req-a", now, now + std::chrono::seconds(45))});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(
      Query(db, "SELECT state || ' ' || request_id FROM uppzy.chat_jobs WHERE id = " + std::to_string(a.id)),
      "polling req-a");
  EXPECT_EQ(store.JobsRenewLeases("w", {a.id}, 30000).size(), 1u);
}

// An app's uncommitted UPDATE (e.g. SET cancel_requested_at) holds the row the same way.
TEST(AppLocks, UncommittedAppUpdateDefersDeliveryWrites) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, answer, finished_at) "
       "VALUES ('s', 'm', 'completed', 1, 'req-1', 'a', now())");
  Exec(db, "SELECT uppzy.close_session('s')");
  DeliveryStore store(db);
  auto claimed = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 1);
  ASSERT_EQ(claimed.size(), 1u);
  const auto now = Clock::now();
  DeliveryTransition t;
  t.action = DeliveryAction::kDeliver;
  t.at = now;
  t.http_status = 200;
  DeliveryWrite w = WriteDeliveryOutcome(claimed[0], t, now);

  pqxx::connection app(db);
  pqxx::work app_tx(app);
  app_tx.exec("UPDATE uppzy.session_closes SET updated_at = now() WHERE id = " +
              std::to_string(claimed[0].id));

  const auto start = steady_clock::now();
  DeliveryApplyResult r = store.DeliveriesApplyWrites("w", {w});
  EXPECT_LT(ElapsedMs(start), 1500);
  ASSERT_EQ(r.deferred.size(), 1u);
  EXPECT_TRUE(r.applied.empty());
  EXPECT_TRUE(store.DeliveriesRenewLeases("w", {claimed[0].ref()}, 30000).empty());
  app_tx.abort();

  r = store.DeliveriesApplyWrites("w", {w});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.session_closes"), "delivered");
}

// A statement that would wait on a lock for long (anything but the hot paths) fails after lock_timeout
// with a transient error, instead of stalling the worker.
TEST(AppLocks, LockTimeoutBoundsAnyOtherWait) {
  const std::string db = test::MigratedDatabase();
  Store store(db);
  pqxx::connection app(db);
  pqxx::work app_tx(app);
  app_tx.exec("LOCK TABLE uppzy.incidents IN ACCESS EXCLUSIVE MODE");
  const auto start = steady_clock::now();
  try {
    store.IncidentsOpen("unauthorized", 401, "d", "site", "fp", "w");
    FAIL() << "waited past the lock";
  } catch (const StoreError& e) {
    EXPECT_TRUE(e.transient()) << e.what();
    EXPECT_EQ(e.sqlstate(), "55P03") << e.what();
  }
  EXPECT_LT(ElapsedMs(start), 5000);
}

TEST(DatabaseUrl, MalformedUrlsAreNamedAndGoodOnesPass) {
  EXPECT_EQ(CheckDatabaseUrl("postgresql://u:p@127.0.0.1:5432/db"), "");
  EXPECT_EQ(CheckDatabaseUrl("host=127.0.0.1 port=5432 dbname=db"), "");
  EXPECT_NE(CheckDatabaseUrl("postgresql://u@127.0.0.1:5432/db?bogus_option=1"), "");
  EXPECT_NE(CheckDatabaseUrl("host=127.0.0.1 port"), "");
  EXPECT_NE(CheckDatabaseUrl("postgres://%zz@host/db"), "");
}

}  // namespace
}  // namespace uppzy
