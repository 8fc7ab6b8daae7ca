// The engine, one pass at a time, with a fake Uppzy client and a fake clock: no process, no socket, no
// sleep. Each test claims jobs through the mailbox as the coordinator would, answers the exchanges the
// engine started, and checks what it sent back (row writes, incident reports) and its metrics.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "runtime/engine.h"
#include "runtime/mailbox.h"
#include "support/runtime_fakes.h"
#include "support/temp_dir.h"
#include "uppzy/key_ring.h"

namespace uppzy::runtime {
namespace {

using test::FakeClock;
using test::FakeUpstream;

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() {
    config.site.site_id = "site-1";
    config.site.key_fingerprint = "0123456789ab";
    config.policy.poll_interval = Millis(1000);
    config.policy.poll_timeout = Millis(10000);
    config.policy.backoff_base = Millis(1000);
    config.policy.backoff_max = Millis(8000);
    config.http_max_connections = 4;
    config.shutdown_grace_ms = 500;
    config.breaker.failures = 3;
    config.breaker.cool_down = Millis(5000);
    engine = std::make_unique<Engine>(config, mailbox, metrics, client, clock);
  }

  static ClaimedJob Job(int64_t id, int attempt = 1, int max_attempts = 3) {
    ClaimedJob j;
    j.id = id;
    j.session_id = "s" + std::to_string(id);
    j.message = "hello";
    j.response_language = "en";
    j.state = JobState::kSubmitting;
    j.attempt = attempt;
    j.max_attempts = max_attempts;
    return j;
  }
  static ClaimedDelivery Delivery(DeliveryKind kind, int64_t id) {
    ClaimedDelivery d;
    d.id = id;
    d.kind = kind;
    d.session_id = "s" + std::to_string(id);
    if (kind == DeliveryKind::kFeedback) {
      d.request_id = "req-9";
      d.feedback = "good";
    }
    d.attempt = 1;
    d.max_attempts = 3;
    return d;
  }

  // What the engine sent the coordinator since the last Take().
  struct Sent {
    std::vector<JobWrite> writes;
    std::vector<DeliveryWrite> deliveries;
    std::vector<IncidentReport> reports;
  };
  Sent Take() {
    Sent s;
    mailbox.TakeForDb(&s.writes, &s.deliveries, &s.reports);
    return s;
  }

  void Pass() { ASSERT_TRUE(engine->RunOnce()); }
  // Hands the engine a claimed job and runs a pass: its submission starts.
  void Claim(ClaimedJob job) {
    mailbox.PushJobs({std::move(job)});
    Pass();
  }
  // Finishes the last exchange started with `o` and runs a pass, which carries out the outcome.
  void Answer(Outcome o) {
    client.Answer(client.Last().tag, std::move(o));
    Pass();
  }
  // Claims `job` and has its submission accepted as "req-<id>"; the accepted write is taken.
  void Accept(ClaimedJob job) {
    const int64_t id = job.id;
    Claim(std::move(job));
    Answer(Outcome::Accepted("req-" + std::to_string(id)));
    ASSERT_EQ(Take().writes.size(), 1u);
  }
  // Moves the clock to the next poll and runs a pass: the poll starts.
  void NextPoll() {
    clock.Advance(config.policy.poll_interval);
    Pass();
    ASSERT_EQ(client.Last().kind, RequestKind::kStatus);
  }

  Config config;
  Mailbox mailbox;
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // injected: what the tests read back
  FakeUpstream client;
  FakeClock clock;
  std::unique_ptr<Engine> engine;
};

TEST_F(EngineTest, AcceptedStoresTheRequestIdAtOnceAndSchedulesTheFirstPoll) {
  Claim(Job(1));
  ASSERT_EQ(client.calls.size(), 1u);
  EXPECT_EQ(client.Last().kind, RequestKind::kSubmit);
  EXPECT_EQ(client.Last().job_id, 1);
  EXPECT_EQ(client.Last().attempt, 1);
  EXPECT_EQ(metrics.submissions(), 1);
  EXPECT_EQ(metrics.in_flight(), 1);

  const TimePoint accepted_at = clock.Now();
  Answer(Outcome::Accepted("req-1"));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  const JobWrite& w = s.writes[0];
  EXPECT_EQ(w.id, 1);
  EXPECT_EQ(w.expected_state, JobState::kSubmitting);
  EXPECT_EQ(w.new_state, JobState::kPolling);
  EXPECT_TRUE(w.keep_lock);
  EXPECT_EQ(w.request_id, "req-1");
  EXPECT_EQ(w.poll_deadline, accepted_at + config.policy.poll_timeout);
  EXPECT_EQ(metrics.in_flight(), 1);

  // The first poll waits for the poll interval, and the engine sleeps exactly that long meanwhile.
  Pass();
  EXPECT_EQ(client.waits.back(), config.policy.poll_interval.count());
  clock.Advance(config.policy.poll_interval - Millis(1));
  Pass();
  EXPECT_EQ(client.calls.size(), 1u);
  clock.Advance(Millis(1));
  Pass();
  ASSERT_EQ(client.calls.size(), 2u);
  EXPECT_EQ(client.Last().kind, RequestKind::kStatus);
  EXPECT_EQ(client.Last().request_id, "req-1");
  EXPECT_EQ(metrics.polls(), 1);
}

TEST_F(EngineTest, ProcessingWritesNothingAndPollsAgain) {
  Accept(Job(1));
  NextPoll();
  Answer(Outcome::Status("processing"));
  EXPECT_TRUE(Take().writes.empty());
  NextPoll();
  EXPECT_EQ(metrics.polls(), 2);
  EXPECT_EQ(metrics.in_flight(), 1);
}

TEST_F(EngineTest, CompletedWritesTheAnswerAndThePollCount) {
  Accept(Job(1));
  NextPoll();
  Answer(Outcome::Status("processing"));
  NextPoll();
  Outcome done = Outcome::Status("completed", "the answer");
  done.result_json = R"({"sources":[]})";
  Answer(done);
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  const JobWrite& w = s.writes[0];
  EXPECT_EQ(w.expected_state, JobState::kPolling);
  EXPECT_EQ(w.new_state, JobState::kCompleted);
  EXPECT_EQ(w.answer, "the answer");
  EXPECT_EQ(w.result_json, R"({"sources":[]})");
  EXPECT_EQ(w.polls, 2);
  EXPECT_TRUE(w.Releases());
  EXPECT_EQ(metrics.completed(), 1);
  EXPECT_EQ(metrics.in_flight(), 0);
}

TEST_F(EngineTest, UpstreamFailedFailsTheJob) {
  Accept(Job(1));
  NextPoll();
  Answer(Outcome::Status("failed", "", "model overloaded"));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kFailed);
  ASSERT_TRUE(s.writes[0].error);
  EXPECT_EQ(s.writes[0].error->kind, ErrorKind::kUpstreamFailed);
  EXPECT_EQ(s.writes[0].error->message, "model overloaded");
  EXPECT_EQ(metrics.failed(), 1);
  EXPECT_EQ(metrics.in_flight(), 0);
}

TEST_F(EngineTest, RetryableErrorWithAttemptsLeftRetriesAfterABackoff) {
  Claim(Job(1, /*attempt=*/1, /*max_attempts=*/3));
  Answer(Outcome::Of(OutcomeKind::kServerError, 503));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  const JobWrite& w = s.writes[0];
  EXPECT_EQ(w.new_state, JobState::kRetrying);
  ASSERT_TRUE(w.run_at);
  // The first backoff is base/2 .. base (equal jitter).
  EXPECT_GE(*w.run_at, clock.Now() + config.policy.backoff_base / 2);
  EXPECT_LE(*w.run_at, clock.Now() + config.policy.backoff_base);
  ASSERT_TRUE(w.error);
  EXPECT_EQ(w.error->kind, ErrorKind::kServerError);
  EXPECT_EQ(w.error->http_status, 503);
  EXPECT_EQ(metrics.retries(), 1);
  EXPECT_EQ(metrics.failed(), 0);
  EXPECT_EQ(metrics.in_flight(), 0);
}

TEST_F(EngineTest, RetryableErrorOnTheLastAttemptFails) {
  Claim(Job(1, /*attempt=*/3, /*max_attempts=*/3));
  Answer(Outcome::Of(OutcomeKind::kRateLimited, 429));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kFailed);
  ASSERT_TRUE(s.writes[0].error);
  EXPECT_EQ(s.writes[0].error->kind, ErrorKind::kRateLimited);
  EXPECT_EQ(metrics.retries(), 0);
  EXPECT_EQ(metrics.failed(), 1);
}

TEST_F(EngineTest, BadRequestFailsAtOnceWithAttemptsLeft) {
  Claim(Job(1, /*attempt=*/1, /*max_attempts=*/3));
  Answer(Outcome::Of(OutcomeKind::kBadRequest, 422, "HTTP 422: message too long"));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kFailed);
  ASSERT_TRUE(s.writes[0].error);
  EXPECT_EQ(s.writes[0].error->kind, ErrorKind::kBadRequest);
  EXPECT_EQ(s.writes[0].error->http_status, 422);
  EXPECT_EQ(metrics.failed(), 1);
}

TEST_F(EngineTest, AnOutcomeIsCountedOnceInTheMetricsTheEngineWasGiven) {
  Claim(Job(1, /*attempt=*/1, /*max_attempts=*/3));
  EXPECT_EQ(metrics.submissions(), 1);
  EXPECT_EQ(metrics.in_flight(), 1);
  Answer(Outcome::Of(OutcomeKind::kBadRequest, 400, "HTTP 400: no"));
  EXPECT_EQ(metrics.finished(JobState::kFailed, ErrorKind::kBadRequest), 1);
  EXPECT_EQ(metrics.failed(), 1);
  EXPECT_EQ(metrics.completed() + metrics.retries() + metrics.poll_timeouts(), 0);
  EXPECT_EQ(metrics.in_flight(), 0);
  // The same series are what /metrics serves from the injected registry.
  const std::string text = metrics::Exposition(registry);
  EXPECT_NE(text.find("uppzy_jobs_finished_total{error_kind=\"bad_request\",state=\"failed\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("uppzy_submissions_total 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("uppzy_http_request_duration_seconds_count{endpoint=\"submit\"} 1\n"),
            std::string::npos)
      << text;
}

class EngineIncidentTest : public EngineTest, public ::testing::WithParamInterface<int> {};

TEST_P(EngineIncidentTest, ReportsTheIncidentHandsBackUnchargedAndPauses) {
  const int status = GetParam();
  const OutcomeKind kind = status == 401 ? OutcomeKind::kUnauthorized : OutcomeKind::kForbidden;
  const ErrorKind error = status == 401 ? ErrorKind::kUnauthorized : ErrorKind::kForbidden;
  Claim(Job(1, /*attempt=*/2));
  Answer(Outcome::Of(kind, status));
  Sent s = Take();
  ASSERT_EQ(s.reports.size(), 1u);
  EXPECT_EQ(s.reports[0].kind, error);
  EXPECT_EQ(s.reports[0].http_status, status);
  ASSERT_EQ(s.writes.size(), 1u);
  const JobWrite& w = s.writes[0];
  EXPECT_EQ(w.new_state, JobState::kRetrying);  // attempt 2 returned: back to where it was
  EXPECT_EQ(w.attempts_delta, -1);
  ASSERT_TRUE(w.error);
  EXPECT_EQ(w.error->kind, error);
  EXPECT_EQ(metrics.failed() + metrics.retries(), 0);

  // Until the coordinator has processed the report, a new claim is handed back unsent, uncharged.
  Claim(Job(2));
  s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].id, 2);
  EXPECT_EQ(s.writes[0].new_state, JobState::kQueued);
  EXPECT_EQ(s.writes[0].attempts_delta, -1);
  EXPECT_EQ(client.calls.size(), 1u);

  // Resolved: the coordinator caught up and the incident is closed.
  mailbox.reports_processed = 1;
  mailbox.paused = false;
  Claim(Job(3));
  EXPECT_EQ(client.calls.size(), 2u);
  EXPECT_EQ(client.Last().job_id, 3);
}

INSTANTIATE_TEST_SUITE_P(UnauthorizedAndForbidden, EngineIncidentTest, ::testing::Values(401, 403));

TEST_F(EngineTest, IncidentOnAPollKeepsTheRequestIdForAdoption) {
  Accept(Job(1));
  NextPoll();
  Answer(Outcome::Of(OutcomeKind::kUnauthorized, 401));
  Sent s = Take();
  ASSERT_EQ(s.reports.size(), 1u);
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kPolling);
  EXPECT_TRUE(s.writes[0].expire_lease);
  EXPECT_EQ(s.writes[0].attempts_delta, 0);
}

TEST_F(EngineTest, PollErrorThenPollTimeoutNamesTheLastPollError) {
  Accept(Job(1, /*attempt=*/1, /*max_attempts=*/3));
  const TimePoint deadline = clock.Now() + config.policy.poll_timeout;
  NextPoll();
  Answer(Outcome::Of(OutcomeKind::kServerError, 503));
  EXPECT_TRUE(Take().writes.empty());  // a failed poll costs nothing and writes nothing
  EXPECT_EQ(metrics.retries(), 0);

  // The next poll is never scheduled past the deadline; at the deadline one last poll is made.
  clock.Advance(std::chrono::duration_cast<Millis>(deadline - clock.Now()));
  Pass();
  ASSERT_EQ(client.Last().kind, RequestKind::kStatus);
  EXPECT_EQ(metrics.polls(), 2);
  Answer(Outcome::Status("processing"));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  const JobWrite& w = s.writes[0];
  EXPECT_EQ(w.expected_state, JobState::kPolling);
  EXPECT_EQ(w.new_state, JobState::kRetrying);
  ASSERT_TRUE(w.error);
  EXPECT_EQ(w.error->kind, ErrorKind::kPollTimeout);
  EXPECT_NE(w.error->message.find("the last poll failed: HTTP 503"), std::string::npos) << w.error->message;
  EXPECT_EQ(metrics.retries(), 1);
  EXPECT_EQ(metrics.in_flight(), 0);
}

TEST_F(EngineTest, CancellationRequestedWhileSubmittingStoresTheAcceptanceThenCancels) {
  Claim(Job(1));
  mailbox.PushCancels({1});
  Pass();  // the call is in flight: nothing to write yet
  EXPECT_TRUE(Take().writes.empty());

  Answer(Outcome::Accepted("req-1"));
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 2u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kPolling);
  EXPECT_EQ(s.writes[0].request_id, "req-1");
  EXPECT_EQ(s.writes[1].expected_state, JobState::kPolling);
  EXPECT_EQ(s.writes[1].new_state, JobState::kCancelled);
  ASSERT_TRUE(s.writes[1].error);
  EXPECT_EQ(s.writes[1].error->kind, ErrorKind::kCancelled);
  EXPECT_EQ(metrics.in_flight(), 0);
  clock.Advance(config.policy.poll_interval);
  Pass();
  EXPECT_EQ(client.calls.size(), 1u);  // no poll of a cancelled job
}

TEST_F(EngineTest, CancellationOfAJobWaitingForItsPollIsImmediate) {
  Accept(Job(1));
  mailbox.PushCancels({1, 99});  // 99 is not ours: ignored
  Pass();
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].id, 1);
  EXPECT_EQ(s.writes[0].new_state, JobState::kCancelled);
  EXPECT_EQ(metrics.in_flight(), 0);
}

TEST_F(EngineTest, DeliveriesOfBothKindsWithTheSameIdAreToldApart) {
  mailbox.PushDeliveries({Delivery(DeliveryKind::kFeedback, 5), Delivery(DeliveryKind::kSessionClose, 5)});
  Pass();
  ASSERT_EQ(client.calls.size(), 2u);
  std::map<RequestKind, uint64_t> tags;
  for (const auto& c : client.calls) {
    tags[c.kind] = c.tag;
    if (c.kind == RequestKind::kFeedback) {
      EXPECT_EQ(c.feedback, "good");
    }
  }
  ASSERT_EQ(tags.size(), 2u);

  client.Answer(tags[RequestKind::kFeedback], Outcome::Of(OutcomeKind::kDelivered, 200));
  client.Answer(tags[RequestKind::kSessionClose], Outcome::Of(OutcomeKind::kDelivered, 204));
  Pass();
  Sent s = Take();
  ASSERT_EQ(s.deliveries.size(), 2u);
  for (const auto& w : s.deliveries) {
    EXPECT_EQ(w.id, 5);
    EXPECT_EQ(w.new_state, DeliveryState::kDelivered);
    EXPECT_EQ(w.delivered_http_status, w.kind == DeliveryKind::kFeedback ? 200 : 204);
  }
  EXPECT_NE(s.deliveries[0].kind, s.deliveries[1].kind);
  EXPECT_TRUE(s.writes.empty());
}

TEST_F(EngineTest, DeliveryFailedOrRetried) {
  mailbox.PushDeliveries({Delivery(DeliveryKind::kFeedback, 5)});
  Pass();
  Answer(Outcome::Of(OutcomeKind::kBadRequest, 404));
  mailbox.PushDeliveries({Delivery(DeliveryKind::kSessionClose, 6)});
  Pass();
  Answer(Outcome::Of(OutcomeKind::kServerError, 502));
  Sent s = Take();
  ASSERT_EQ(s.deliveries.size(), 2u);
  EXPECT_EQ(s.deliveries[0].new_state, DeliveryState::kFailed);
  ASSERT_TRUE(s.deliveries[0].error);
  EXPECT_EQ(s.deliveries[0].error->kind, ErrorKind::kBadRequest);
  EXPECT_EQ(s.deliveries[1].new_state, DeliveryState::kRetrying);
  EXPECT_TRUE(s.deliveries[1].run_at);
}

TEST_F(EngineTest, DeliveryIncidentIsReportedAndHandedBackUncharged) {
  mailbox.PushDeliveries({Delivery(DeliveryKind::kFeedback, 5)});
  Pass();
  Answer(Outcome::Of(OutcomeKind::kForbidden, 403));
  Sent s = Take();
  ASSERT_EQ(s.reports.size(), 1u);
  EXPECT_EQ(s.reports[0].kind, ErrorKind::kForbidden);
  ASSERT_EQ(s.deliveries.size(), 1u);
  EXPECT_EQ(s.deliveries[0].new_state, DeliveryState::kQueued);
  EXPECT_EQ(s.deliveries[0].attempts_delta, -1);
}

TEST_F(EngineTest, BreakerOpensAfterFailuresAndHandsBackUnsentClaimsUncharged) {
  mailbox.PushJobs({Job(1), Job(2), Job(3)});
  Pass();
  ASSERT_EQ(client.calls.size(), 3u);
  for (const auto& c : client.calls) client.Answer(c.tag, Outcome::Of(OutcomeKind::kNetwork, 0, "reset"));
  Pass();
  EXPECT_EQ(Take().writes.size(), 3u);
  EXPECT_EQ(mailbox.breaker_state.load(), BreakerState::kOpen);
  EXPECT_EQ(metrics.breaker_state(), BreakerState::kOpen);

  Claim(Job(4));
  EXPECT_EQ(client.calls.size(), 3u);
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].id, 4);
  EXPECT_EQ(s.writes[0].attempts_delta, -1);

  clock.Advance(config.breaker.cool_down);
  Pass();
  EXPECT_EQ(mailbox.breaker_state.load(), BreakerState::kHalfOpen);
  Claim(Job(5));  // the probe
  EXPECT_EQ(client.Last().job_id, 5);
  Answer(Outcome::Accepted("req-5"));
  EXPECT_EQ(mailbox.breaker_state.load(), BreakerState::kClosed);
}

TEST_F(EngineTest, StopHandsBackIdleRowsAndWaitsForCallsInFlight) {
  Accept(Job(1));  // polling, waiting for its timer
  Claim(Job(2));   // submission in flight
  mailbox.stopping = true;
  Pass();
  Sent s = Take();
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].id, 1);
  EXPECT_TRUE(s.writes[0].expire_lease);

  Answer(Outcome::Accepted("req-2"));  // its outcome is stored
  EXPECT_FALSE(engine->RunOnce());     // then handed back, and nothing is left in flight
  engine->Shutdown();
  s = Take();
  ASSERT_EQ(s.writes.size(), 2u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kPolling);
  EXPECT_EQ(s.writes[1].id, 2);
  EXPECT_TRUE(s.writes[1].expire_lease);
  EXPECT_TRUE(mailbox.engine_done.load());
}

TEST_F(EngineTest, SubmissionStillInFlightAfterTheGraceIsLeftToItsLease) {
  Claim(Job(1));
  mailbox.stopping = true;
  Pass();
  clock.Advance(Millis(config.shutdown_grace_ms));
  EXPECT_FALSE(engine->RunOnce());
  engine->Shutdown();
  EXPECT_TRUE(Take().writes.empty());  // its POST may have reached Uppzy: rescue charges the attempt
  EXPECT_TRUE(mailbox.engine_done.load());
}

// The shared budget (issue 10): a budgeted site's calls go only with a token; calls that wait are
// asked for (the demand the coordinator reads), polls go before submissions, and unspent tokens expire.
TEST_F(EngineTest, ABudgetedSitesCallsWaitForTokensPollsFirstAndUnspentTokensExpire) {
  // Tokens not spent within 250 ms are gone: an engine never saves up a burst.
  mailbox.PushTokens({{"site-1", 5}}, BudgetView{{"site-1"}});
  Pass();  // nothing to send
  clock.Advance(Millis(300));
  Claim(Job(9));
  EXPECT_TRUE(client.calls.empty()) << "the five tokens expired";
  mailbox.PushTokens({{"site-1", 1}}, BudgetView{{"site-1"}});
  Pass();
  ASSERT_EQ(client.calls.size(), 1u) << "it goes with the next token";
  Answer(Outcome::Accepted("req-9"));
  Take();
  client.calls.clear();
  mailbox.PushTokens({{"site-1", 1}}, BudgetView{{"site-1"}});
  Accept(Job(1));  // the one token: job 1's submission
  client.calls.clear();
  Claim(Job(2));  // no token: its submission waits, held
  EXPECT_TRUE(client.calls.empty());
  EXPECT_EQ(mailbox.Demand().at("site-1"), 1);
  clock.Advance(config.policy.poll_interval);
  Pass();  // the polls of jobs 9 and 1 are due: they wait too
  EXPECT_TRUE(client.calls.empty());
  EXPECT_EQ(mailbox.Demand().at("site-1"), 3);
  // Two tokens: the polls of the submitted jobs go first.
  mailbox.PushTokens({{"site-1", 2}}, BudgetView{{"site-1"}});
  Pass();
  ASSERT_EQ(client.calls.size(), 2u);
  EXPECT_EQ(client.calls[0].kind, RequestKind::kStatus);
  EXPECT_EQ(client.calls[1].kind, RequestKind::kStatus);
  EXPECT_EQ(mailbox.Demand().at("site-1"), 1);
  client.calls.clear();
  mailbox.PushTokens({{"site-1", 1}}, BudgetView{{"site-1"}});
  Pass();
  ASSERT_EQ(client.calls.size(), 1u);
  EXPECT_EQ(client.Last().kind, RequestKind::kSubmit);
  EXPECT_EQ(client.Last().job_id, 2);
  EXPECT_TRUE(mailbox.Demand().empty());
}

// A 429 blocks the site here at once (no call until the block ends) and is reported once per block.
TEST_F(EngineTest, A429BlocksTheSiteAndIsReportedOncePerBlock) {
  Claim(Job(1));
  Claim(Job(2));
  Outcome limited = Outcome::Of(OutcomeKind::kRateLimited, 429);
  limited.retry_after = Millis(2000);
  client.Answer(client.calls[0].tag, limited);
  client.Answer(client.calls[1].tag, limited);
  Pass();
  const auto reports = mailbox.TakeRateLimits();
  ASSERT_EQ(reports.size(), 1u) << "two 429s of one burst: one report";
  EXPECT_EQ(reports[0].site_id, "site-1");
  EXPECT_EQ(reports[0].block_ms, 2000);
  EXPECT_GT(reports[0].own_rate_per_s, 0);
  // A new job's submission waits out the block (its retries are the rows' own back-off).
  client.calls.clear();
  Claim(Job(3));
  EXPECT_TRUE(client.calls.empty());
  clock.Advance(Millis(2100));
  Pass();
  ASSERT_FALSE(client.calls.empty());
  EXPECT_EQ(client.calls[0].job_id, 3);
}

}  // namespace
}  // namespace uppzy::runtime

// The engine with a key ring (site-1's key in a file): on a refused key it has the ring re-read its
// files and sends the request again at once when the key changed meanwhile (issue 10: "on a 401 it
// re-reads the key once before it opens an incident").
namespace uppzy::runtime {
namespace {

class EngineKeyTest : public EngineTest {
 protected:
  EngineKeyTest() {
    Rotate("key-one-1");
    KeySources sources;
    sources.default_site = "site-1";
    sources.keys_dir = keys_dir.path().string();
    KeyRingResult loaded = KeyRing::Load(sources);
    if (!loaded.ring) throw std::runtime_error(loaded.problems.front());
    ring = std::move(loaded.ring);
    engine = std::make_unique<Engine>(config, mailbox, metrics, client, clock, ring.get());
  }
  ~EngineKeyTest() override { engine.reset(); }

  void Rotate(const std::string& key) { test::TempDir::Write(keys_dir / "site-1", key); }

  test::TempDir keys_dir{"uppzy-engine-keys"};
  std::unique_ptr<KeyRing> ring;
};

TEST_F(EngineKeyTest, AKeyRotatedWhileTheRequestWasOutIsSentAgainAtOnceInsteadOfAnIncident) {
  Claim(Job(1));
  Rotate("key-two-22");  // the old key is revoked at Uppzy: the answer is 401
  Answer(Outcome::Of(OutcomeKind::kUnauthorized, 401));
  Sent s = Take();
  EXPECT_TRUE(s.reports.empty());
  EXPECT_TRUE(s.writes.empty()) << "nothing to store: the job is still ours, its attempt unchanged";
  EXPECT_EQ(ring->Get("site-1")->key, "key-two-22");
  Pass();
  ASSERT_EQ(client.calls.size(), 2u);
  EXPECT_EQ(client.Last().kind, RequestKind::kSubmit);
  EXPECT_EQ(client.Last().attempt, 1) << "the same attempt, the same Idempotency-Key";
  Answer(Outcome::Accepted("req-1"));
  s = Take();
  EXPECT_TRUE(s.reports.empty());
  ASSERT_EQ(s.writes.size(), 1u);
  EXPECT_EQ(s.writes[0].new_state, JobState::kPolling);
}

TEST_F(EngineKeyTest, AKeyThatDidNotChangeOpensTheIncident) {
  Claim(Job(1));
  Answer(Outcome::Of(OutcomeKind::kUnauthorized, 401));
  EXPECT_EQ(Take().reports.size(), 1u);
  EXPECT_EQ(client.calls.size(), 1u);
}

TEST_F(EngineKeyTest, ASecondRefusalOfTheSameAttemptOpensTheIncidentWhateverTheKey) {
  Accept(Job(1));
  NextPoll();
  Rotate("key-two-22");
  Answer(Outcome::Of(OutcomeKind::kForbidden, 403));
  EXPECT_TRUE(Take().reports.empty());
  Pass();
  ASSERT_EQ(client.calls.size(), 3u);
  EXPECT_EQ(client.Last().kind, RequestKind::kStatus);
  Rotate("key-three-333");
  Answer(Outcome::Of(OutcomeKind::kForbidden, 403));
  EXPECT_EQ(Take().reports.size(), 1u);
}

TEST_F(EngineKeyTest, ADeliveryRefusedWithARotatedKeyIsSentAgain) {
  mailbox.PushDeliveries({Delivery(DeliveryKind::kSessionClose, 5)});
  Pass();
  Rotate("key-two-22");
  Answer(Outcome::Of(OutcomeKind::kUnauthorized, 401));
  EXPECT_TRUE(Take().reports.empty());
  Pass();
  ASSERT_EQ(client.calls.size(), 2u);
  Answer(Outcome::Of(OutcomeKind::kDelivered, 200));
  Sent s = Take();
  EXPECT_TRUE(s.reports.empty());
  ASSERT_EQ(s.deliveries.size(), 1u);
  EXPECT_EQ(s.deliveries[0].new_state, DeliveryState::kDelivered);
}

}  // namespace
}  // namespace uppzy::runtime
