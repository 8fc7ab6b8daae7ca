// Ratings and session closes against a real PostgreSQL: the easy-case INSERT, refusals, the duplicate
// rule, claims, guarded writes, hand-back, rescue, leases, NOTIFY payloads, views and the CLI.
#include <gtest/gtest.h>

#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "support/support.h"
#include "uppzy/delivery_store.h"

namespace uppzy {
namespace {

using std::chrono::seconds;
using test::Exec;
using test::Query;
using test::QueryInt;

// A completed job with request_id `req_<tag>` in session `s-<tag>`; returns its id.
long long CompletedJob(const std::string& db, const std::string& tag) {
  return QueryInt(db,
                  "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, answer, "
                  "finished_at) VALUES ('s-" +
                      tag + "', 'm', 'completed', 1, 'req_" + tag + "', 'echo: m', now()) RETURNING id");
}

long long JobIn(const std::string& db, const std::string& state) {
  const std::string extra = state == "polling" ? ", request_id, lease_expires_at) VALUES ('s', 'm', '" +
                                                     state + "', 1, 'req_p', now())"
                                               : ") VALUES ('s', 'm', '" + state + "', 0)";
  return QueryInt(
      db, "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts" + extra + " RETURNING id");
}

std::string Row(const std::string& db, const std::string& table, int64_t id, const std::string& columns) {
  return Query(
      db, "SELECT concat_ws(' ', " + columns + ") FROM uppzy." + table + " WHERE id = " + std::to_string(id));
}

std::string SqlError(const std::string& db, const std::string& sql) {
  try {
    Exec(db, sql);
  } catch (const pqxx::sql_error& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Rating, CompletedJobIsAcceptedAndTakesSessionAndRequestFromTheJob) {
  const std::string db = test::MigratedDatabase();
  const long long job = CompletedJob(db, "a");
  const long long id = QueryInt(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" +
                                        std::to_string(job) + ", 'good') RETURNING id");
  EXPECT_EQ(
      Row(db, "chat_feedback", id, "job_id, session_id, request_id, feedback, state, attempts, max_attempts"),
      std::to_string(job) + " s-a req_a good queued 0 3");
}

TEST(Rating, UnfinishedOrUnknownJobIsRefusedAtInsertNamingTheJobAndItsState) {
  const std::string db = test::MigratedDatabase();
  for (const std::string state : {"queued", "polling"}) {
    const long long job = JobIn(db, state);
    const std::string err = SqlError(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" +
                                             std::to_string(job) + ", 'good')");
    EXPECT_NE(
        err.find("cannot rate job " + std::to_string(job) + ": its state is " + state + ", not completed"),
        std::string::npos)
        << err;
  }
  EXPECT_NE(SqlError(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (987654, 'bad')")
                .find("cannot rate job 987654: there is no such job"),
            std::string::npos);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_feedback"), 0);

  // The store says the same, as a non-transient StoreError with the SQLSTATE.
  DeliveryStore store(db);
  const long long polling = JobIn(db, "polling");
  try {
    store.FeedbackRateJob(polling, "good", std::nullopt);
    FAIL() << "accepted";
  } catch (const StoreError& e) {
    EXPECT_FALSE(e.transient());
    EXPECT_EQ(e.sqlstate(), "23514");
    EXPECT_NE(std::string(e.what()).find("cannot rate job " + std::to_string(polling)), std::string::npos);
  }
}

struct BadRating {
  const char* values;  // appended to INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, ...)
  const char* constraint;
};

class RatingConstraints : public ::testing::TestWithParam<BadRating> {};

TEST_P(RatingConstraints, RejectBadInsertWithNamedError) {
  static const std::string db = test::MigratedDatabase();
  const std::string err = SqlError(db, std::string("INSERT INTO uppzy.chat_feedback ") + GetParam().values);
  EXPECT_NE(err.find(GetParam().constraint), std::string::npos) << err;
}

const BadRating kBadRatings[] = {
    {"(session_id, request_id, feedback) VALUES ('s', 'r', 'meh')", "chat_feedback_feedback_valid"},
    {"(session_id, request_id, feedback, state) VALUES ('s', 'r', 'good', 'sent')",
     "chat_feedback_state_valid"},
    {"(session_id, request_id, feedback, state, delivered_at) VALUES ('s', 'r', 'good', 'delivered', now())",
     "chat_feedback_finished_at_iff_terminal"},
    {"(session_id, request_id, feedback, state, finished_at) VALUES ('s', 'r', 'good', 'delivered', now())",
     "chat_feedback_delivered_at_iff_delivered"},
    {"(session_id, request_id, feedback, max_attempts) VALUES ('s', 'r', 'good', 0)",
     "chat_feedback_max_attempts_range"},
    {"(session_id, request_id, feedback, attempts, max_attempts) VALUES ('s', 'r', 'good', 2, 2)",
     "chat_feedback_waiting_has_attempt_left"},
    {"(session_id, request_id, feedback) VALUES ('', 'r', 'good')", "chat_feedback_session_id_length"},
    {"(session_id, request_id, feedback) VALUES ('s', '', 'good')", "chat_feedback_request_id_length"},
    {"(session_id, request_id, feedback, comment) VALUES ('s', 'r', 'good', repeat('c', 4001))",
     "chat_feedback_comment_length"},
    {"(session_id, request_id, feedback, state, attempts) VALUES ('s', 'r', 'good', 'sending', 1)",
     "chat_feedback_sending_is_held"},
    {"(session_id, request_id, feedback, error_kind) VALUES ('s', 'r', 'good', 'poll_timeout')",
     "chat_feedback_error_kind_valid"},
};

INSTANTIATE_TEST_SUITE_P(Table, RatingConstraints, ::testing::ValuesIn(kBadRatings));

TEST(Rating, DuplicateRule) {
  const std::string db = test::MigratedDatabase();
  const std::string job = std::to_string(CompletedJob(db, "d"));
  const long long id = QueryInt(db, "SELECT uppzy.rate_job(" + job + ", 'good', 'helpful')");

  // A second plain INSERT for the same request is refused by the unique constraint...
  EXPECT_NE(SqlError(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" + job + ", 'bad')")
                .find("chat_feedback_one_per_request"),
            std::string::npos);
  // ... or ignored with ON CONFLICT.
  Exec(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" + job +
               ", 'bad') ON CONFLICT (request_id) DO NOTHING");
  EXPECT_EQ(Row(db, "chat_feedback", id, "feedback, comment"), "good helpful");

  // Delivered once.
  Exec(db,
       "UPDATE uppzy.chat_feedback SET state = 'delivered', attempts = 1, delivered_at = now(), finished_at "
       "= now(), "
       "feedback_submitted_at = '2025-03-01T12:00:00Z'");
  // The same rating again: nothing changes (the comment, when given, replaces the stored one).
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.rate_job(" + job + ", 'good')"), id);
  EXPECT_EQ(Row(db, "chat_feedback", id, "feedback, comment, state, attempts"), "good helpful delivered 1");
  // A changed rating is stored and queued again with a fresh budget; Uppzy's first timestamp is kept.
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.rate_job(" + job + ", 'bad', 'wrong after all')"), id);
  EXPECT_EQ(Row(db, "chat_feedback", id,
                "feedback, comment, state, attempts, delivered_at IS NULL, finished_at IS NULL, "
                "feedback_submitted_at = '2025-03-01T12:00:00Z'"),
            "bad wrong after all queued 0 t t t");
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_feedback"), 1);
  // While it waits, another change just updates the value.
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.rate_job(" + job + ", 'good')"), id);
  EXPECT_EQ(Row(db, "chat_feedback", id, "feedback, state, attempts"), "good queued 0");
}

TEST(Rating, ChangedWhileSendingIsSentAgain) {
  const std::string db = test::MigratedDatabase();
  const std::string job = std::to_string(CompletedJob(db, "c"));
  Exec(db, "SELECT uppzy.rate_job(" + job + ", 'good')");
  DeliveryStore store(db);
  auto claimed = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].feedback, "good");
  Exec(db, "SELECT uppzy.rate_job(" + job + ", 'bad')");
  EXPECT_EQ(Row(db, "chat_feedback", claimed[0].id, "state, feedback"), "sending bad")
      << "the send is not disturbed";

  DeliveryTransition t;
  t.action = DeliveryAction::kDeliver;
  t.http_status = 200;
  t.feedback_submitted_at = Clock::now();
  auto r = store.DeliveriesApplyWrites("w", {WriteDeliveryOutcome(claimed[0], t, Clock::now())});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(
      Row(db, "chat_feedback", claimed[0].id,
          "state, attempts, locked_by IS NULL, delivered_at IS NULL, feedback_submitted_at IS NOT NULL"),
      "queued 0 t t t");
  auto again = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].feedback, "bad");
  EXPECT_EQ(again[0].attempt, 1);
}

TEST(Claim, TakesDueRowsOfOneKindOldestFirstAndHoldsThem) {
  const std::string db = test::MigratedDatabase();
  Exec(
      db,
      "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, run_at) VALUES "
      "('s1', 'r1', 'good', now() - interval '1 minute'), ('s2', 'r2', 'bad', now() - interval '2 minutes'), "
      "('s3', 'r3', 'good', now() + interval '1 hour')");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s1')");
  DeliveryStore store(db);
  EXPECT_TRUE(store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 0).empty());
  auto got = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  ASSERT_EQ(got.size(), 2u) << "a row whose run_at is in the future waits";
  std::set<std::string> requests;
  for (const auto& d : got) {
    EXPECT_EQ(d.kind, DeliveryKind::kFeedback);
    EXPECT_EQ(d.attempt, 1);
    EXPECT_EQ(d.max_attempts, 3);
    requests.insert(d.request_id + ":" + d.feedback + ":" + d.session_id);
  }
  EXPECT_EQ(requests, (std::set<std::string>{"r1:good:s1", "r2:bad:s2"}));
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM uppzy.chat_feedback WHERE state = 'sending' AND attempts = 1 AND "
                     "locked_by = 'w' AND lease_expires_at > now() + interval '20 seconds'"),
            2);
  EXPECT_TRUE(store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10).empty());
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.session_closes"), "queued") << "claims are per kind";

  auto closes = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 10);
  ASSERT_EQ(closes.size(), 1u);
  EXPECT_EQ(closes[0].kind, DeliveryKind::kSessionClose);
  EXPECT_EQ(closes[0].session_id, "s1");
  EXPECT_TRUE(closes[0].request_id.empty());
  EXPECT_TRUE(closes[0].feedback.empty());
}

TEST(Claim, EightThreadsTakeEachRowExactlyOnce) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback) "
       "SELECT 's', 'r' || g, 'good' FROM generate_series(1, 1000) g");
  std::mutex mu;
  std::vector<int64_t> all;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      DeliveryStore store(db);
      for (;;) {
        auto got = store.DeliveriesClaim(DeliveryKind::kFeedback, "w" + std::to_string(t), 30000, 37);
        if (got.empty()) return;
        std::lock_guard lock(mu);
        for (const auto& d : got) all.push_back(d.id);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 1000u);
}

TEST(Apply, DeliveredRetryFailAndFencing) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, max_attempts) VALUES "
       "('s', 'r1', 'good', 3), ('s', 'r2', 'bad', 2), ('s', 'r3', 'good', 3)");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s'), ('t')");
  DeliveryStore store(db);
  auto fb = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  auto cl = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 10);
  ASSERT_EQ(fb.size(), 3u);
  ASSERT_EQ(cl.size(), 2u);
  std::map<std::string, ClaimedDelivery> by;
  for (const auto& d : fb) by[d.request_id] = d;
  for (const auto& d : cl) by[d.session_id] = d;
  const Policy p;
  const TimePoint now = Clock::now();
  Outcome ok = Outcome::Of(OutcomeKind::kDelivered, 200);
  ok.feedback_submitted_at = "2025-03-01T12:00:00.5Z";
  const Outcome busy = Outcome::Of(OutcomeKind::kServerError, 503, "HTTP 503");
  const Outcome closed = Outcome::Of(OutcomeKind::kBadRequest, 409, "HTTP 409");

  auto decide = [&](const ClaimedDelivery& d, const Outcome& o) {
    return WriteDeliveryOutcome(d, DecideDelivery(DeliveryContext::Of(d), o, now, p, 0.5), now);
  };
  DeliveryWrite stolen = decide(by["r3"], ok);
  stolen.expected_attempt = 2;  // a write from an older claim
  auto r = store.DeliveriesApplyWrites("w", {decide(by["r1"], ok), decide(by["r2"], busy),
                                             decide(by["s"], ok), decide(by["t"], closed), stolen});
  EXPECT_EQ(r.applied.size(), 4u);
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(r.refused[0], by["r3"].ref());

  EXPECT_EQ(Row(db, "chat_feedback", by["r1"].id,
                "state, attempts, delivered_http_status, locked_by IS NULL, lease_expires_at IS NULL, "
                "delivered_at IS NOT NULL, finished_at IS NOT NULL, "
                "feedback_submitted_at = '2025-03-01T12:00:00.5Z', error_kind IS NULL"),
            "delivered 1 200 t t t t t t");
  EXPECT_EQ(Row(db, "chat_feedback", by["r2"].id,
                "state, attempts, error_kind, last_http_status, run_at > now(), finished_at IS NULL, "
                "errors->0->>'kind', errors->0->>'attempt', errors->0->>'request_id'"),
            "retrying 1 server_error 503 t t server_error 1 r2");
  EXPECT_EQ(Row(db, "session_closes", by["s"].id, "state, delivered_http_status"), "delivered 200");
  EXPECT_EQ(Row(db, "session_closes", by["t"].id, "state, delivered_http_status, error_kind IS NULL"),
            "delivered 409 t")
      << "409 on a close: already closed, which is success";
  EXPECT_EQ(Row(db, "chat_feedback", by["r3"].id, "state, locked_by"), "sending w")
      << "refused write changed nothing";

  // Another worker's write is refused too.
  EXPECT_EQ(store.DeliveriesApplyWrites("other", {decide(by["r3"], ok)}).refused.size(), 1u);

  // The retried rating: second attempt, last one (max 2) fails for good.
  Exec(db, "UPDATE uppzy.chat_feedback SET run_at = now() WHERE request_id = 'r2'");
  auto again = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt, 2);
  r = store.DeliveriesApplyWrites("w", {decide(again[0], busy)});
  EXPECT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(Row(db, "chat_feedback", again[0].id, "state, attempts, error_kind, jsonb_array_length(errors)"),
            "failed 2 server_error 2");
}

TEST(Apply, FeedbackAndCloseWithTheSameIdAreDistinct) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback) VALUES ('s', 'r', 'good')");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s')");
  DeliveryStore store(db);
  auto fb = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 1).at(0);
  auto cl = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 1).at(0);
  ASSERT_EQ(fb.id, cl.id);
  DeliveryTransition t;
  t.action = DeliveryAction::kDeliver;
  t.http_status = 200;
  auto r = store.DeliveriesApplyWrites("w", {WriteDeliveryOutcome(fb, t, Clock::now())});
  EXPECT_EQ(r.applied, std::vector<DeliveryRef>{fb.ref()});
  EXPECT_EQ(Query(db, "SELECT state FROM uppzy.session_closes"), "sending");
  auto renewed = store.DeliveriesRenewLeases("w", {fb.ref(), cl.ref()}, 60000);
  EXPECT_EQ(renewed, std::vector<DeliveryRef>{cl.ref()}) << "only rows still sending are renewed";
}

TEST(HandBack, IncidentAndShutdownReturnTheAttemptUncharged) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, attempts) VALUES "
       "('s', 'first', 'good', 0), ('s', 'second', 'good', 1)");
  DeliveryStore store(db);
  auto got = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 10);
  ASSERT_EQ(got.size(), 2u);
  const TimePoint now = Clock::now();
  std::vector<DeliveryWrite> writes;
  for (const auto& d : got) {
    if (d.request_id == "first") {
      writes.push_back(
          WriteDeliveryOutcome(d,
                               DecideDelivery(DeliveryContext::Of(d),
                                              Outcome::Of(OutcomeKind::kUnauthorized, 401), now, Policy{}, 0),
                               now));
    } else {
      writes.push_back(WriteDeliveryHandBack(d, std::nullopt));
    }
  }
  EXPECT_EQ(store.DeliveriesApplyWrites("w", writes).applied.size(), 2u);
  EXPECT_EQ(Query(db,
                  "SELECT concat_ws(' ', state, attempts, locked_by IS NULL, error_kind, errors->0->>'kind') "
                  "FROM uppzy.chat_feedback WHERE request_id = 'first'"),
            "queued 0 t unauthorized unauthorized");
  EXPECT_EQ(Query(db,
                  "SELECT concat_ws(' ', state, attempts, locked_by IS NULL, jsonb_array_length(errors)) "
                  "FROM uppzy.chat_feedback WHERE request_id = 'second'"),
            "retrying 1 t 0");
  EXPECT_EQ(store.DeliveriesClaim(DeliveryKind::kFeedback, "w2", 30000, 10).size(), 2u)
      << "claimable at once";
}

TEST(Rescue, ExpiredSendingRowsOfBothKindsRetryWithLeaseExpired) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, max_attempts) VALUES "
       "('s', 'a', 'good', 3), ('s', 'b', 'good', 1)");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s')");
  DeliveryStore store(db);
  ASSERT_EQ(store.DeliveriesClaim(DeliveryKind::kFeedback, "crashed", 1000, 10).size(), 2u);
  ASSERT_EQ(store.DeliveriesClaim(DeliveryKind::kSessionClose, "crashed", 1000, 10).size(), 1u);
  EXPECT_EQ(store.DeliveriesRescueExpired(100), 0) << "a live lease is never rescued";
  Exec(db, "UPDATE uppzy.chat_feedback SET lease_expires_at = now() - interval '1 second'");
  Exec(db, "UPDATE uppzy.session_closes SET lease_expires_at = now() - interval '1 second'");
  EXPECT_EQ(store.DeliveriesRescueExpired(100), 3);
  EXPECT_EQ(
      Query(
          db,
          "SELECT concat_ws(' ', state, attempts, error_kind, errors->0->>'kind', errors->0->>'request_id', "
          "locked_by IS NULL) FROM uppzy.chat_feedback WHERE request_id = 'a'"),
      "retrying 1 lease_expired lease_expired a t");
  EXPECT_EQ(
      Query(db,
            "SELECT concat_ws(' ', state, error_kind, finished_at IS NOT NULL) FROM uppzy.chat_feedback "
            "WHERE request_id = 'b'"),
      "failed lease_expired t");
  EXPECT_EQ(Query(db, "SELECT concat_ws(' ', state, error_kind) FROM uppzy.session_closes"),
            "retrying lease_expired");
}

TEST(Leases, RenewExtendsOnlyRowsStillHeldByUs) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) SELECT 's' || g FROM generate_series(1, 3) g");
  DeliveryStore store(db);
  auto got = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 1000, 3);
  ASSERT_EQ(got.size(), 3u);
  std::vector<DeliveryRef> held;
  for (const auto& d : got) held.push_back(d.ref());
  Exec(db, "UPDATE uppzy.session_closes SET locked_by = 'thief' WHERE id = " + std::to_string(got[0].id));
  EXPECT_EQ(store.DeliveriesRenewLeases("w", held, 60000).size(), 2u);
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM uppzy.session_closes WHERE lease_expires_at > now() + "
                     "interval '30 seconds'"),
            2);
}

TEST(SessionClose, InsertAndRepeatedClosesAreFine) {
  const std::string db = test::MigratedDatabase();
  DeliveryStore store(db);
  const int64_t a = store.SessionClosesEnqueue("user-17-conv-3");
  EXPECT_EQ(store.SessionClosesEnqueue("user-17-conv-3"), a) << "a pending close is reused";
  // Plain INSERTs may repeat a session.
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('user-17-conv-3')");
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.session_closes WHERE state = 'queued'"), 2);
  EXPECT_NE(SqlError(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('')")
                .find("session_closes_session_id_length"),
            std::string::npos);
  // Once the first is delivered, closing again queues a new request.
  Exec(db,
       "UPDATE uppzy.session_closes SET state = 'delivered', attempts = 1, delivered_at = now(), "
       "finished_at = now()");
  EXPECT_GT(store.SessionClosesEnqueue("user-17-conv-3"), a);
  EXPECT_TRUE(store.DeliveriesAnyUnfinished());
}

TEST(Store, AnyUnfinishedSeesBothKinds) {
  const std::string db = test::MigratedDatabase();
  DeliveryStore store(db);
  EXPECT_FALSE(store.DeliveriesAnyUnfinished());
  Exec(db, "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback) VALUES ('s', 'r', 'good')");
  EXPECT_TRUE(store.DeliveriesAnyUnfinished());
  Exec(db, "DELETE FROM uppzy.chat_feedback");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) VALUES ('s')");
  EXPECT_TRUE(store.DeliveriesAnyUnfinished());
}

TEST(Rating, PurgingTheJobKeepsTheRating) {
  const std::string db = test::MigratedDatabase();
  const long long job = CompletedJob(db, "p");
  Exec(db, "SELECT uppzy.rate_job(" + std::to_string(job) + ", 'bad')");
  Exec(db, "DELETE FROM uppzy.chat_jobs WHERE id = " + std::to_string(job));
  EXPECT_EQ(Query(db, "SELECT concat_ws(' ', job_id IS NULL, request_id) FROM uppzy.chat_feedback"),
            "t req_p");
}

struct Collector : pqxx::notification_receiver {
  using pqxx::notification_receiver::notification_receiver;
  void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
  std::vector<std::string> payloads;
};

TEST(Notify, WakeupPerInsertAndFinishPayloadsWithKind) {
  const std::string db = test::MigratedDatabase();
  const long long job = CompletedJob(db, "n");
  pqxx::connection listen(db);
  Collector wake(listen, "uppzy_chat_jobs_wakeup");
  Collector finished(listen, "uppzy_chat_jobs");
  listen.get_notifs();

  Exec(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" + std::to_string(job) + ", 'good')");
  Exec(db, "INSERT INTO uppzy.session_closes (session_id) SELECT 'c' || g FROM generate_series(1, 20) g");
  DeliveryStore store(db);
  const TimePoint now = Clock::now();
  auto fb = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, 1).at(0);
  auto cl = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 1).at(0);
  DeliveryTransition ok;
  ok.action = DeliveryAction::kDeliver;
  ok.http_status = 200;
  DeliveryTransition fail;
  fail.action = DeliveryAction::kFail;
  fail.error_kind = ErrorKind::kBadRequest;
  fail.http_status = 400;
  store.DeliveriesApplyWrites("w", {WriteDeliveryOutcome(fb, ok, now), WriteDeliveryOutcome(cl, fail, now)});
  Exec(db, "UPDATE uppzy.chat_jobs SET state = 'cancelled', finished_at = now() WHERE id = " +
               std::to_string(JobIn(db, "queued")));
  test::WaitFor(
      [&] {
        listen.get_notifs();
        return finished.payloads.size() >= 3;
      },
      seconds(5));
  EXPECT_GE(wake.payloads.size(), 2u);
  EXPECT_EQ(std::count(wake.payloads.begin(), wake.payloads.end(), "delivery"), 2)
      << "one wake-up per INSERT statement, however many rows";
  ASSERT_EQ(finished.payloads.size(), 3u);
  std::map<std::string, nlohmann::json> by_kind;
  for (const auto& p : finished.payloads) {
    auto j = nlohmann::json::parse(p);
    by_kind[j["kind"].get<std::string>()] = j;
  }
  EXPECT_EQ(by_kind["feedback"], nlohmann::json({{"kind", "feedback"},
                                                 {"id", fb.id},
                                                 {"state", "delivered"},
                                                 {"job_id", job},
                                                 {"request_id", "req_n"}}));
  EXPECT_EQ(
      by_kind["session_close"],
      nlohmann::json(
          {{"kind", "session_close"}, {"id", cl.id}, {"state", "failed"}, {"session_id", cl.session_id}}));
  EXPECT_EQ(by_kind["chat_job"]["state"], "cancelled");
  EXPECT_TRUE(by_kind["chat_job"].contains("job_key")) << "the jobs' keys are kept";
  EXPECT_TRUE(by_kind["chat_job"]["id"].is_number());
}

TEST(Views, FeedbackHealthAndDeliveryFailures) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, state, attempts, delivered_at, "
       "finished_at, created_at) VALUES "
       "('s', 'r1', 'good', 'delivered', 1, now(), now(), now()), "
       "('s', 'r2', 'good', 'delivered', 1, now(), now(), now()), "
       "('s', 'r3', 'bad', 'delivered', 1, now() - interval '3 hours', now() - interval '3 hours', "
       "now() - interval '3 hours'), "
       "('s', 'r5', 'good', 'queued', 0, NULL, NULL, now())");
  Exec(db,
       "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, state, attempts, finished_at, "
       "error_kind, last_http_status, last_error) VALUES ('s', 'r4', 'bad', 'failed', 1, now(), "
       "'bad_request', "
       "404, 'HTTP 404')");
  Exec(db,
       "INSERT INTO uppzy.session_closes (session_id, state, attempts, finished_at, error_kind) VALUES "
       "('gone', 'failed', 3, now() - interval '1 minute', 'server_error')");
  EXPECT_EQ(
      Query(db,
            "SELECT string_agg(concat_ws(' ', period, delivered, failed, good, bad, good_ratio, pending), "
            "' | ' ORDER BY period) FROM uppzy.chat_feedback_health"),
      "1 hour 2 1 3 1 0.750 1 | 24 hours 3 1 3 2 0.600 1");
  EXPECT_EQ(
      Query(db,
            "SELECT string_agg(concat_ws(' ', kind, session_id, request_id, error_kind, last_http_status), "
            "' | ') FROM uppzy.delivery_failures"),
      "feedback s r4 bad_request 404 | session_close gone server_error");
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.deliveries"), 6);
}

TEST(Cli, FeedbackAndCloseSession) {
  const std::string db = test::MigratedDatabase();
  const std::map<std::string, std::string> env{{"DATABASE_URL", db}};
  const std::string done = std::to_string(CompletedJob(db, "cli"));
  const std::string polling = std::to_string(JobIn(db, "polling"));
  std::string out;
  ASSERT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "feedback", "--job", done, "--rating", "good", "--comment", "nice"},
                       env, &out),
      0)
      << out;
  EXPECT_EQ(out.substr(0, out.find_last_not_of("\n") + 1), Query(db, "SELECT id FROM uppzy.chat_feedback"));
  EXPECT_EQ(Query(db, "SELECT concat_ws(' ', feedback, comment, request_id) FROM uppzy.chat_feedback"),
            "good nice req_cli");

  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "feedback", "--job", polling, "--rating", "bad"}, env, &out),
            1);
  EXPECT_NE(out.find("feedback --job " + polling + ": refused"), std::string::npos) << out;
  EXPECT_NE(out.find("cannot rate job " + polling + ": its state is polling, not completed"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "feedback", "--job", done, "--rating", "meh"}, env, &out), 2)
      << out;

  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "close-session", "--session", "s-cli"}, env, &out), 0) << out;
  EXPECT_EQ(out.substr(0, out.find_last_not_of("\n") + 1),
            Query(db, "SELECT id FROM uppzy.session_closes WHERE session_id = 's-cli'"));
}

}  // namespace
}  // namespace uppzy
