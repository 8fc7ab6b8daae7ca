// End to end: the real uppzy-worker process, the real uppzy-mock process, a real PostgreSQL.
#include <gtest/gtest.h>
#include <signal.h>

#include <pqxx/pqxx>
#include <thread>

#include "support/worker_fixture.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;

// The worker, the mock and a fresh database (tests/support/worker_fixture.h).
class WorkerE2E : public test::WorkerFixture {};

TEST_F(WorkerE2E, HappyPathStoresEchoAnswerAndRequestId) {
  auto id = Enqueue("what is the refund policy?");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  EXPECT_EQ(Field(id, "answer"), "echo: what is the refund policy?");
  EXPECT_FALSE(Field(id, "request_id").empty());
  EXPECT_EQ(Field(id, "attempts"), "1");
  EXPECT_EQ(Field(id, "result->>'confidence_level'"), "high");
  EXPECT_EQ(Field(id, "locked_by IS NULL AND finished_at IS NOT NULL"), "t");
  EXPECT_EQ(Field(id, "jsonb_array_length(errors)"), "0");
}

TEST_F(WorkerE2E, HealthzAnswersWhileAlive) {
  auto worker = StartWorker();
  const std::string port = test::HttpPortFromLog(*worker, 10s);
  ASSERT_FALSE(port.empty()) << worker->Log();
  std::string body;
  EXPECT_EQ(test::HttpGet("http://127.0.0.1:" + port + "/healthz", &body), 200);
  EXPECT_NE(body.find("ok"), std::string::npos);
}

TEST_F(WorkerE2E, RateLimitedThenOkCompletesOnSecondAttempt) {
  auto id = Enqueue("q mock.submit=429,ok");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "2");
  EXPECT_EQ(Field(id, "jsonb_array_length(errors)"), "1");
  EXPECT_EQ(Field(id, "errors->0->>'kind'"), "rate_limited");
  EXPECT_EQ(Field(id, "errors->0->>'http_status'"), "429");
}

TEST_F(WorkerE2E, ServerErrorEveryTimeFailsAfterThreeAttempts) {
  auto id = Enqueue("q mock.submit=503,503,503");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "failed")) << worker->Log();
  EXPECT_EQ(Field(id, "error_kind"), "server_error");
  EXPECT_EQ(Field(id, "attempts"), "3");
  EXPECT_EQ(Field(id, "jsonb_array_length(errors)"), "3");
  EXPECT_EQ(mock_->Stats()["submits"], 3);
}

TEST_F(WorkerE2E, BadRequestFailsAfterOneAttempt) {
  auto id = Enqueue("q mock.submit=400");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "failed")) << worker->Log();
  EXPECT_EQ(Field(id, "error_kind"), "bad_request");
  EXPECT_EQ(Field(id, "attempts"), "1");
  EXPECT_EQ(Field(id, "last_http_status"), "400");
}

TEST_F(WorkerE2E, UnauthorizedOpensOneIncidentPausesAndResumesAfterResolve) {
  auto id = Enqueue("q mock.submit=401");
  auto worker = StartWorker();
  ASSERT_TRUE(test::WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.incidents") == 1; }, 20s))
      << worker->Log();
  ASSERT_TRUE(WaitState(id, "queued")) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "0") << "a 401 is not charged to the job";
  EXPECT_EQ(
      Query(db_, "SELECT kind || ' ' || http_status || ' ' || (resolved_at IS NULL) FROM uppzy.incidents"),
      "unauthorized 401 true");
  EXPECT_EQ(Query(db_, "SELECT length(api_key_fingerprint) FROM uppzy.incidents"), "12");

  // While the incident is open, nothing reaches Uppzy, not even new jobs. (The job is back in `queued`,
  // so the 401 was the last call, and the pause was set before the hand-back was written.)
  const auto calls = mock_->Stats()["requests_total"].get<long long>();
  auto second = Enqueue("another question");
  // A check that nothing happens needs elapsed time: 15 fetch intervals and an incident check.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(mock_->Stats()["requests_total"].get<long long>(), calls);
  EXPECT_EQ(Field(second, "state"), "queued");
  EXPECT_EQ(Field(id, "state"), "queued");

  std::string out;
  const auto incident = Query(db_, "SELECT id FROM uppzy.incidents");
  ASSERT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "incidents", "resolve", incident}, {{"DATABASE_URL", db_}}, &out),
      0)
      << out;
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  ASSERT_TRUE(WaitState(second, "completed")) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "1");
  const std::string log = worker->Log();
  size_t lines = 0;
  for (size_t pos = 0; (pos = log.find("configuration_incident", pos)) != std::string::npos; ++pos) ++lines;
  EXPECT_EQ(lines, 1u) << "one error line per incident, not one per job";
}

TEST_F(WorkerE2E, RestartWithSameKeyStaysPausedWithNewKeyResumes) {
  auto id = Enqueue("a question");
  const std::map<std::string, std::string> wrong_key = {{"UPPZY_API_KEY", "revoked-key"}};
  {
    auto worker = StartWorker(wrong_key);  // the mock answers 401 to this key, as Uppzy would
    ASSERT_TRUE(
        test::WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.incidents") == 1; }, 20s))
        << worker->Log();
    worker->Signal(SIGTERM);
    EXPECT_EQ(worker->Wait(15s), 0);
  }
  EXPECT_EQ(Field(id, "state"), "queued");
  const auto calls = mock_->Stats()["requests_total"].get<long long>();
  {
    auto worker = StartWorker(wrong_key);
    // The open incident is checked before the first claim, and pauses the worker before it claims.
    ASSERT_TRUE(test::WaitFor(
        [&] { return worker->Log().find("paused_by_open_incident") != std::string::npos; }, 20s))
        << worker->Log();
    EXPECT_EQ(mock_->Stats()["requests_total"].get<long long>(), calls) << "same key: still paused";
    EXPECT_EQ(Field(id, "state"), "queued");
    worker->Signal(SIGTERM);
    EXPECT_EQ(worker->Wait(15s), 0);
  }
  // Restarted with a different (working) key: it resumes without anyone resolving the incident.
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  EXPECT_EQ(Field(id, "attempts"), "1");
}

TEST_F(WorkerE2E, PollTimeoutRetriesThenFails) {
  auto id = Enqueue("slow mock.ready=60000", 2);
  auto worker = StartWorker({{"UPPZY_POLL_TIMEOUT_MS", "300"}});
  ASSERT_TRUE(WaitState(id, "failed")) << worker->Log();
  EXPECT_EQ(Field(id, "error_kind"), "poll_timeout");
  EXPECT_EQ(Field(id, "attempts"), "2");
  EXPECT_EQ(Field(id, "jsonb_array_length(errors)"), "2");
  EXPECT_EQ(Field(id, "errors->0->>'kind'"), "poll_timeout");
  EXPECT_FALSE(Field(id, "errors->0->>'request_id'").empty());
  EXPECT_EQ(mock_->Stats()["submits"], 2) << "never more submissions than max_attempts";
  // The polls of the last submission ran out: its answer came after the last poll, if ever.
  EXPECT_EQ(Field(id, "answer_ready_after_ms > 0 AND answer_seen_after_ms IS NULL"), "t");
}

TEST_F(WorkerE2E, CompletedJobKeepsWhenItsAnswerBecameReadyAsThePollsSawIt) {
  auto id = Enqueue("slow mock.ready=600");
  auto worker = StartWorker({{"UPPZY_POLL_INTERVAL_MS", "100"}});
  ASSERT_TRUE(WaitState(id, "completed")) << worker->Log();
  // What adaptive polling learns from: not ready at one poll, ready at the next, counted from the
  // acceptance. The mock made the answer ready 600 ms after it accepted the submission.
  const int ready = std::stoi(Field(id, "answer_ready_after_ms"));
  const int seen = std::stoi(Field(id, "answer_seen_after_ms"));
  EXPECT_GE(ready, 300);
  EXPECT_LE(ready, 650);
  EXPECT_GE(seen, 550);
  EXPECT_GT(seen, ready);
  EXPECT_LE(seen - ready, 1000) << "one poll interval apart, give or take a round trip";
}

TEST_F(WorkerE2E, UpstreamFailureKeepsUppzysErrorText) {
  auto id = Enqueue("q mock.fail=index_unavailable");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(id, "failed")) << worker->Log();
  EXPECT_EQ(Field(id, "error_kind"), "upstream_failed");
  EXPECT_EQ(Field(id, "last_error"), "index_unavailable");
  EXPECT_EQ(Field(id, "attempts"), "1");
}

TEST_F(WorkerE2E, GarbageAndHugePollBodiesAreRetriedWithoutAttemptsAndMemoryStaysSmall) {
  auto warmup = Enqueue("warm up");
  auto worker = StartWorker();
  ASSERT_TRUE(WaitState(warmup, "completed")) << worker->Log();
  const long before_kib = test::PeakRssKiB(worker->pid());
  auto garbage = Enqueue("q mock.poll=garbage,completed");
  auto huge = Enqueue("q mock.poll=huge,huge,completed");
  ASSERT_TRUE(WaitState(garbage, "completed")) << worker->Log();
  ASSERT_TRUE(WaitState(huge, "completed")) << worker->Log();
  EXPECT_EQ(Field(garbage, "attempts"), "1");
  EXPECT_EQ(Field(huge, "attempts"), "1");
  const long after_kib = test::PeakRssKiB(worker->pid());
  EXPECT_LT(after_kib - before_kib, 16 * 1024) << "a 20 MB body must not be buffered";
}

TEST_F(WorkerE2E, ConstraintViolationEnqueuesNothingWithClearError) {
  std::string out;
  int rc = test::RunCommand(
      {UPPZY_WORKER_BIN, "enqueue", "--session", "s", "--message", "hi", "--language", "not a language"},
      {{"DATABASE_URL", db_}}, &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("chat_jobs_response_language_tag"), std::string::npos) << out;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs"), 0);
  rc = test::RunCommand({UPPZY_WORKER_BIN, "enqueue", "--session", "s", "--message", "hi", "--key", "job_1"},
                        {{"DATABASE_URL", db_}}, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE job_key = 'job_1'"), 1);
}

TEST_F(WorkerE2E, ThousandJobsEachSubmittedExactlyOnce) {
  test::Exec(db_,
             "INSERT INTO uppzy.chat_jobs (session_id, message) "
             "SELECT 'bulk-' || g, 'question number ' || g FROM generate_series(1, 1000) g");
  auto worker = StartWorker({{"UPPZY_POLL_INTERVAL_MS", "100"}});
  ASSERT_TRUE(test::WaitFor(
      [&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed'") == 1000; },
      60s))
      << Query(
             db_,
             "SELECT string_agg(state || ':' || n, ' ') FROM (SELECT state, count(*) n FROM uppzy.chat_jobs "
             "GROUP BY state) s");
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE answer <> 'echo: ' || message"), 0)
      << "each answer landed on its own job";
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE attempts <> 1"), 0);
  auto stats = mock_->Stats();
  EXPECT_EQ(stats["submits"], 1000);
  EXPECT_EQ(stats["duplicate_submissions"], 0);
}

TEST_F(WorkerE2E, ListeningAppIsToldWhenItsJobFinishes) {
  pqxx::connection listen(db_);
  struct Collector : pqxx::notification_receiver {
    using pqxx::notification_receiver::notification_receiver;
    void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
    std::vector<std::string> payloads;
  } finished(listen, "uppzy_chat_jobs");
  listen.get_notifs();
  test::Exec(db_,
             "INSERT INTO uppzy.chat_jobs (job_key, session_id, message) VALUES ('job_48291', 's', 'hello')");
  auto worker = StartWorker();
  ASSERT_TRUE(test::WaitFor(
      [&] {
        listen.get_notifs();
        return !finished.payloads.empty();
      },
      20s))
      << worker->Log();
  auto j = nlohmann::json::parse(finished.payloads[0]);
  EXPECT_EQ(j["job_key"], "job_48291");
  EXPECT_EQ(j["state"], "completed");
}

TEST_F(WorkerE2E, LogsNeverContainMessageAnswerOrApiKey) {
  const std::string sentinel = "SENTINEL-4242 my private question";
  auto ok = Enqueue(sentinel);
  auto bad = Enqueue(sentinel + " mock.submit=503,ok");
  auto worker = StartWorker({{"UPPZY_LOG_LEVEL", "trace"}, {"UPPZY_LOG_FORMAT", "json"}});
  ASSERT_TRUE(WaitState(ok, "completed")) << worker->Log();
  ASSERT_TRUE(WaitState(bad, "completed")) << worker->Log();
  worker->Signal(SIGTERM);
  EXPECT_EQ(worker->Wait(15s), 0);
  const std::string log = worker->Log();
  EXPECT_EQ(log.find("SENTINEL-4242"), std::string::npos);
  EXPECT_EQ(log.find(key_), std::string::npos);
  // Every line is JSON with the job fields.
  std::istringstream lines(log);
  std::string line;
  int job_lines = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("job_id")) {
      ++job_lines;
      for (const char* f : {"attempt", "state", "error_kind", "request_id", "http_status", "duration_ms"}) {
        EXPECT_TRUE(j.contains(f)) << line;
      }
    }
  }
  EXPECT_GT(job_lines, 0);
}

TEST_F(WorkerE2E, BadConfigurationStopsStartupNamingEverySetting) {
  std::string out;
  int rc = test::RunCommand({UPPZY_WORKER_BIN, "run"},
                            {{"UPPZY_POLL_INTERVAL_MS", "soon"},
                             {"UPPZY_BASE_URL", "http://api.example.com/api/v1"},
                             {"UPPZY_LOG_FORMAT", "xml"}},
                            &out);
  EXPECT_EQ(rc, 2);
  for (const char* name : {"DATABASE_URL", "UPPZY_SITE_ID", "UPPZY_API_KEY", "UPPZY_POLL_INTERVAL_MS",
                           "UPPZY_BASE_URL", "UPPZY_LOG_FORMAT"}) {
    EXPECT_NE(out.find(name), std::string::npos) << name << " missing from: " << out;
  }
}

TEST_F(WorkerE2E, CancelStopsAnInFlightJobWithinSeconds) {
  auto polling = Enqueue("slow mock.ready=60000");
  auto worker = StartWorker({{"UPPZY_POLL_TIMEOUT_MS", "60000"}});
  ASSERT_TRUE(WaitState(polling, "polling")) << worker->Log();
  auto queued_later = Enqueue("later", 3, "s-later");
  ASSERT_TRUE(WaitState(queued_later, "completed"));
  std::string out;
  // An operator cancels through the CLI; an app could run the same UPDATE with plain SQL.
  ASSERT_EQ(
      test::RunCommand({UPPZY_WORKER_BIN, "cancel", std::to_string(polling)}, {{"DATABASE_URL", db_}}, &out),
      0)
      << out;
  ASSERT_TRUE(WaitState(polling, "cancelled", 10s)) << worker->Log();
  EXPECT_EQ(Field(polling, "locked_by IS NULL AND finished_at IS NOT NULL AND request_id IS NOT NULL"), "t");
  const auto polls = mock_->Stats()["polls"].get<long long>();
  // A check that nothing happens needs elapsed time: 10 poll intervals.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(mock_->Stats()["polls"].get<long long>(), polls) << "the worker stopped polling it";
  // Plain SQL on a queued job cancels it at once.
  const long long queued = QueryInt(db_,
                                    "INSERT INTO uppzy.chat_jobs (session_id, message, run_at) "
                                    "VALUES ('s-q', 'never run', now() + interval '1 hour') RETURNING id");
  test::Exec(db_,
             "UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = " + std::to_string(queued));
  EXPECT_EQ(Field(queued, "state"), "cancelled");
}

TEST_F(WorkerE2E, SigtermHandsBackPollingRowsAndExitsZero) {
  std::vector<long long> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Enqueue("slow " + std::to_string(i) + " mock.ready=60000"));
  auto worker = StartWorker({{"UPPZY_POLL_TIMEOUT_MS", "60000"}});
  ASSERT_TRUE(test::WaitFor(
      [&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'polling'") == 5; },
      20s))
      << worker->Log();
  worker->Signal(SIGTERM);
  EXPECT_EQ(worker->Wait(15s), 0) << worker->Log();
  EXPECT_EQ(QueryInt(db_,
                     "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'polling' AND locked_by IS NULL "
                     "AND request_id IS NOT NULL AND lease_expires_at <= now() AND attempts = 1"),
            5);
  // A new worker adopts them at once and never resubmits.
  auto next = StartWorker({{"UPPZY_POLL_TIMEOUT_MS", "60000"}});
  ASSERT_TRUE(test::WaitFor(
      [&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE locked_by IS NOT NULL") == 5; },
      10s))
      << next->Log();
  EXPECT_EQ(mock_->Stats()["submits"], 5);
}

}  // namespace
}  // namespace uppzy
