// Hostile input end to end: a real worker against a mock that answers with NUL bytes, dot-segment
// request ids and bad timestamps, and an app that holds row locks. Nothing may wedge the worker.
#include <gtest/gtest.h>

#include <pqxx/pqxx>
#include <thread>

#include "support/worker_fixture.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;

const std::string kFffd = "\xEF\xBF\xBD";  // U+FFFD, what a NUL from Uppzy becomes

// The worker, the mock and a fresh database (tests/support/worker_fixture.h).
class HostileE2E : public test::WorkerFixture {};

// Before: the write was refused by jsonb, the row stayed polling and was polled again every lease.
TEST_F(HostileE2E, NulInAPollReplyIsStoredCleanedOnce) {
  auto id = Enqueue("mock.poll=nul what is NUL?");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "completed", 15s)) << worker->Log();
  EXPECT_EQ(Field(id, "answer"), "mock answer" + kFffd + " with NUL");
  EXPECT_EQ(Field(id, "result->>('note' || chr(65533))"), "value" + kFffd);
  EXPECT_EQ(Field(id, "polls"), "1");
  EXPECT_EQ(Field(id, "attempts"), "1");
  EXPECT_EQ(worker->Log().find('\0'), std::string::npos) << "a raw NUL reached the log";
}

TEST_F(HostileE2E, NulOrDotSegmentRequestIdIsRefusedAsInvalidResponse) {
  auto nul = Enqueue("mock.submit=nul,ok first", 3, "s-nul");
  auto dots = Enqueue("mock.submit=dotdot second", 1, "s-dots");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(nul, "completed")) << worker->Log();
  EXPECT_EQ(Field(nul, "attempts"), "2");
  EXPECT_EQ(Field(nul, "errors->0->>'kind'"), "invalid_response");
  EXPECT_EQ(Field(nul, "errors->0->>'message'"), "request_id has a byte that is not printable ASCII");
  ASSERT_TRUE(WaitState(dots, "failed")) << worker->Log();
  EXPECT_EQ(Field(dots, "error_kind"), "invalid_response");
  EXPECT_EQ(Field(dots, "last_error"), "request_id is a dot segment");
}

TEST_F(HostileE2E, NulInA5xxErrorTextIsKeptReadable) {
  auto id = Enqueue("mock.submit=500nul,ok third");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "2");
  EXPECT_EQ(Field(id, "errors->0->>'message'"), "HTTP 500: mock error" + kFffd + " with NUL");
}

// Before: the 401's text could not be written, the job ended lease_expired and was charged.
TEST_F(HostileE2E, NulInA401OpensAWholeIncidentAndChargesNothing) {
  auto id = Enqueue("mock.submit=401nul fourth");
  auto worker = StartWorker();
  ASSERT_TRUE(test::WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.incidents") == 1; }, 15s))
      << worker->Log();
  EXPECT_EQ(Query(db_, "SELECT detail FROM uppzy.incidents"), "HTTP 401: mock error" + kFffd + " with NUL");
  ASSERT_TRUE(test::WaitFor([&] { return Field(id, "state") == "queued"; }, 10s)) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "0");
  EXPECT_EQ(Field(id, "error_kind IS NULL OR error_kind <> 'lease_expired'"), "t");
}

// Before: every coordinator round failed with database_error, forever; no claims, no heartbeat.
TEST_F(HostileE2E, NulInAFeedbackErrorNeitherWedgesTheWorkerNorTheRow) {
  auto rated = Enqueue("rate me", 3, "mock.feedback=500nul,nul");
  auto worker = StartWorker({{"UPPZY_LEASE_MS", "3000"}});
  ASSERT_TRUE(WaitState(rated, "completed")) << worker->Log();
  const long long fb = QueryInt(db_, "SELECT uppzy.rate_job(" + std::to_string(rated) + ", 'good')");
  auto feedback = [&](const std::string& expr) {
    return Query(db_, "SELECT " + expr + " FROM uppzy.chat_feedback WHERE id = " + std::to_string(fb));
  };
  // 500 with NUL, then a 200 whose feedback_submitted_at is year 0 (refused), then ok.
  ASSERT_TRUE(test::WaitFor([&] { return feedback("state") == "delivered"; }, 20s)) << worker->Log();
  EXPECT_EQ(feedback("attempts"), "3");
  EXPECT_EQ(feedback("errors->0->>'message'"), "HTTP 500: mock error" + kFffd + " with NUL");
  EXPECT_EQ(feedback("errors->1->>'message'"),
            "feedback_submitted_at is not an ISO 8601 time between 1970 and 2200");
  EXPECT_EQ(feedback("feedback_submitted_at IS NULL OR feedback_submitted_at > '2000-01-01'"), "t");
  // The worker goes on: a job enqueued now completes.
  auto later = Enqueue("after the feedback");
  ASSERT_TRUE(WaitState(later, "completed")) << worker->Log();
  EXPECT_EQ(worker->Log().find("database_error"), std::string::npos) << worker->Log();
}

// Before: the lease renewal waited on the app's lock for as long as the transaction lasted; no
// claims and no heartbeat meanwhile.
TEST_F(HostileE2E, AnAppHoldingARowLockForThirtySecondsStallsNothing) {
  auto held = Enqueue("mock.ready=1500 the held one");
  auto worker = StartWorker({{"UPPZY_LEASE_MS", "3000"}});
  ASSERT_TRUE(WaitState(held, "polling", 10s)) << worker->Log();

  pqxx::connection app(db_);
  pqxx::work app_tx(app);
  app_tx.exec("SELECT id FROM uppzy.chat_jobs WHERE id = " + std::to_string(held) + " FOR UPDATE");
  const auto locked_at = std::chrono::steady_clock::now();
  const std::string heartbeat_before = Query(db_, "SELECT heartbeat_at::text FROM uppzy.workers");

  // Meanwhile the worker claims and finishes other jobs, and keeps its heartbeat.
  std::vector<long long> others;
  for (int i = 0; i < 10; ++i)
    others.push_back(Enqueue("other " + std::to_string(i), 3, "s-" + std::to_string(i)));
  for (long long id : others) ASSERT_TRUE(WaitState(id, "completed", 15s)) << worker->Log();
  ASSERT_TRUE(test::WaitFor(
      [&] { return Query(db_, "SELECT heartbeat_at::text FROM uppzy.workers") != heartbeat_before; }, 5s));
  std::this_thread::sleep_until(locked_at + 30s);  // the lock is held for the full 30 s
  EXPECT_EQ(Field(held, "state"), "polling") << "nothing can change a row the app holds";
  app_tx.commit();

  // Once the lock goes, the held job finishes too.
  ASSERT_TRUE(WaitState(held, "completed", 15s)) << worker->Log();
  EXPECT_EQ(Field(held, "answer"), "echo: mock.ready=1500 the held one");
}

// A coordinator that reaches the database but makes no progress turns /readyz 503, and back.
TEST_F(HostileE2E, ReadyzTurns503WhileTheCoordinatorIsStalled) {
  auto worker = StartWorker({{"UPPZY_LEASE_MS", "3000"}});
  const std::string port = test::HttpPortFromLog(*worker, 10s);
  ASSERT_FALSE(port.empty()) << worker->Log();
  const std::string url = "http://127.0.0.1:" + port + "/readyz";
  std::string body;
  ASSERT_TRUE(test::WaitFor([&] { return test::HttpGet(url, &body) == 200; }, 10s)) << body;

  pqxx::connection app(db_);
  pqxx::work app_tx(app);
  app_tx.exec("LOCK TABLE uppzy.workers IN ACCESS EXCLUSIVE MODE");  // every heartbeat times out
  ASSERT_TRUE(test::WaitFor([&] { return test::HttpGet(url, &body) == 503; }, 30s)) << worker->Log();
  EXPECT_NE(body.find("no database progress"), std::string::npos) << body;
  app_tx.abort();
  ASSERT_TRUE(test::WaitFor([&] { return test::HttpGet(url, &body) == 200; }, 20s)) << body << worker->Log();
}

}  // namespace
}  // namespace uppzy
