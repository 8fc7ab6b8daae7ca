// The coordinator, one pass at a time, with fake stores and a fake clock: no PostgreSQL, no sleep.
// Each test feeds it through the mailbox as the engine would and checks the calls the stores saw, what
// it handed the engine and its metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "runtime/coordinator.h"
#include "runtime/mailbox.h"
#include "support/runtime_fakes.h"

namespace uppzy::runtime {
namespace {

using test::FakeClock;
using test::FakeDb;

// A completed write for job `id` (attempt 1, one poll).
JobWrite CompletedWrite(int64_t id) {
  HeldJob h{id, JobState::kPolling, 1, "req-" + std::to_string(id), 1};
  return WriteCompleted(h, "the answer", "{}");
}

class CoordinatorTest : public ::testing::Test {
 protected:
  CoordinatorTest() {
    config.worker_id = "w1";
    config.site.site_id = "site-1";
    config.site.key_fingerprint = "0123456789ab";
    config.max_in_flight = 10;
    config.claim_batch = 4;
    config.lease_ms = 3000;  // renewals every second
    config.fetch_interval_ms = 1000;
    config.rescue_interval_ms = 2000;
    config.shutdown_grace_ms = 1000;
    coordinator =
        std::make_unique<Coordinator>(config, WorkerOptions{}, mailbox, metrics, test::FakeStores(db), clock);
  }

  void Pass() { ASSERT_TRUE(coordinator->RunOnce(all_done)); }
  // Ids of the jobs handed to the engine since the last call.
  std::vector<int64_t> Claimed() {
    std::vector<int64_t> ids;
    for (const auto& j : mailbox.TakeJobs()) ids.push_back(j.id);
    return ids;
  }
  // Moves the clock to the next lease renewal and runs a pass; returns the ids renewed (sorted).
  std::vector<int64_t> Renewed() {
    const size_t before = db.renewals.size();
    clock.Advance(Millis(config.lease_ms / 3));
    coordinator->RunOnce(all_done);
    return db.renewals.size() > before ? db.renewals.back() : std::vector<int64_t>{};
  }
  // Claims `n` jobs (ids 1..n on a fresh FakeDb).
  void Hold(int n) {
    db.queued = n;
    mailbox.WakeDb();
    Pass();
    ASSERT_EQ(Claimed().size(), static_cast<size_t>(n));
  }
  JobWrite Accepted(int64_t id) {
    HeldJob h{id, JobState::kSubmitting, 1, {}, 0};
    return WriteAccepted(h, "req-" + std::to_string(id), clock.Now(), clock.Now() + Millis(45000));
  }
  static JobWrite Completed(int64_t id, std::string answer = "the answer") {
    JobWrite w = CompletedWrite(id);
    w.answer = std::move(answer);
    return w;
  }
  static std::vector<int64_t> Ids(const std::vector<JobWrite>& batch) {
    std::vector<int64_t> ids;
    for (const auto& w : batch) ids.push_back(w.id);
    return ids;
  }

  Config config;
  Mailbox mailbox;
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // injected: what the tests read back
  FakeDb db;
  FakeClock clock;
  std::atomic<bool> all_done{false};
  std::unique_ptr<Coordinator> coordinator;
};

TEST_F(CoordinatorTest, ClaimsAreSizedToFreeCapacity) {
  db.queued = 20;
  mailbox.WakeDb();
  Pass();  // the rescue pass's claim (its adoption round, then a batch of 4) stands for the woken claim
  EXPECT_EQ(db.connects, 1);
  EXPECT_EQ(db.claim_limits, (std::vector<int>{4}));
  EXPECT_EQ(Claimed().size(), 4u);

  Pass();  // the last claim filled its batch: claim again at once, then only what fits
  Pass();
  EXPECT_EQ(db.claim_limits, (std::vector<int>{4, 4, 2}));
  EXPECT_EQ(Claimed().size(), 6u);

  Pass();  // full: no claim at all
  EXPECT_EQ(db.claim_limits.size(), 3u);

  mailbox.PushWrite(Completed(1));  // one row leaves our hands: room for one
  Pass();
  EXPECT_EQ(db.claim_limits, (std::vector<int>{4, 4, 2, 1}));
  EXPECT_EQ(Claimed(), (std::vector<int64_t>{11}));
}

// Issue 13: an idle worker whose listener works looks for work without a NOTIFY only every
// UPPZY_LISTEN_FALLBACK_MS; without a listener it falls back to UPPZY_FETCH_INTERVAL_MS at once, and
// a NOTIFY is answered at once either way.
TEST_F(CoordinatorTest, AQuietWorkerLooksForWorkOnlyEveryListenFallback) {
  mailbox.listening = true;
  Pass();  // start-up: one claim pass
  const size_t start_claims = db.claim_limits.size();
  const size_t start_delivery_claims = db.delivery_claims.size();
  ASSERT_EQ(start_claims, 1u);
  for (int s = 1; s < config.listen_fallback_ms / 1000; ++s) {
    clock.Advance(Millis(1000));
    Pass();
  }
  EXPECT_EQ(db.claim_limits.size(), start_claims) << "claimed while quiet before the fallback was due";
  EXPECT_EQ(db.delivery_claims.size(), start_delivery_claims);
  clock.Advance(Millis(1000));
  Pass();
  EXPECT_EQ(db.claim_limits.size(), start_claims + 1) << "one claim pass at the fallback interval";

  db.queued = 2;
  mailbox.WakeDb();  // a NOTIFY: claimed at once
  Pass();
  EXPECT_EQ(Claimed().size(), 2u);

  // Holding work: the fallback is the fetch interval again.
  const size_t busy = db.claim_limits.size();
  clock.Advance(Millis(config.fetch_interval_ms));
  Pass();
  EXPECT_GT(db.claim_limits.size(), busy);

  // Idle again, but the listener is gone: back to every fetch interval at once.
  mailbox.PushWrite(Completed(1));
  mailbox.PushWrite(Completed(2));
  mailbox.listening = false;
  Pass();
  const size_t deaf = db.claim_limits.size();
  clock.Advance(Millis(config.fetch_interval_ms));
  Pass();
  EXPECT_GT(db.claim_limits.size(), deaf);
}

// A quiet worker still looks for work when a retry it wrote comes due: no NOTIFY fires for a retry, and
// the fallback claim may be 30 s away.
TEST_F(CoordinatorTest, AQuietWorkerClaimsWhenItsOwnRetryComesDue) {
  mailbox.listening = true;
  Hold(1);
  JobWrite retry = CompletedWrite(1);
  retry.new_state = JobState::kRetrying;
  retry.answer.reset();
  retry.result_json.reset();
  retry.run_at = clock.Now() + Millis(5000);
  mailbox.PushWrite(retry);
  Pass();  // stored: nothing held, the worker is quiet
  for (int s = 1; s <= 2; ++s) {
    clock.Advance(Millis(1000));
    Pass();
  }
  db.queued = 1;  // the retried row (the fake store does not look at run_at)
  for (int s = 3; s <= 4; ++s) {
    clock.Advance(Millis(1000));
    Pass();
  }
  EXPECT_TRUE(Claimed().empty()) << "quiet: no fallback claim before the retry is due";
  clock.Advance(Millis(1000));
  Pass();
  EXPECT_EQ(Claimed().size(), 1u) << "claimed when the retry came due, not at the next fallback claim";
}

// Issue 13: a claim costs the database about as much as a few hundred rows, so a worker that holds a
// full batch claims again only once a quarter of a batch of room is free, not for every job finished.
TEST_F(CoordinatorTest, AFullWorkerWaitsForAQuarterBatchOfRoomBeforeClaimingAgain) {
  config.max_in_flight = 100;
  config.claim_batch = 40;  // a claim is worth it from 10 rows of room
  coordinator =
      std::make_unique<Coordinator>(config, WorkerOptions{}, mailbox, metrics, test::FakeStores(db), clock);
  db.queued = 1000;
  mailbox.WakeDb();
  for (int i = 0; i < 4; ++i) Pass();
  ASSERT_EQ(Claimed().size(), 100u);
  const size_t claims = db.claim_limits.size();
  for (int64_t id = 1; id <= 9; ++id) mailbox.PushWrite(Completed(id));
  Pass();
  EXPECT_EQ(db.claim_limits.size(), claims) << "9 rows of room: no claim yet";
  EXPECT_EQ(Claimed().size(), 0u);
  mailbox.PushWrite(Completed(10));
  Pass();
  ASSERT_EQ(db.claim_limits.size(), claims + 1);
  EXPECT_EQ(db.claim_limits.back(), 10);
  EXPECT_EQ(Claimed().size(), 10u);
}

// Job writes linger in the mailbox until a batch is there or the first has waited UPPZY_WRITE_LINGER_MS;
// anything else wakes the coordinator at once.
TEST(MailboxLinger, WritesWaitForABatchOrTheLingerOthersDoNot) {
  using std::chrono::steady_clock;
  Mailbox m;
  const auto far = steady_clock::now() + std::chrono::seconds(10);
  for (int i = 1; i <= 4; ++i) m.PushWrite(CompletedWrite(i));
  auto t0 = steady_clock::now();
  m.WaitForDb(far, Millis(5000), 4);
  EXPECT_LT(steady_clock::now() - t0, std::chrono::seconds(2)) << "a full batch goes at once";

  Mailbox one;
  one.PushWrite(CompletedWrite(1));
  t0 = steady_clock::now();
  one.WaitForDb(far, Millis(300), 100);
  const auto waited = steady_clock::now() - t0;
  EXPECT_GE(waited, Millis(250)) << "one write lingers";
  EXPECT_LT(waited, std::chrono::seconds(5)) << "but not past the linger";

  Mailbox woken;
  woken.PushWrite(CompletedWrite(1));
  woken.WakeDb();
  t0 = steady_clock::now();
  woken.WaitForDb(far, Millis(5000), 100);
  EXPECT_LT(steady_clock::now() - t0, std::chrono::seconds(2)) << "a wake (NOTIFY, stop) is not delayed";
}

TEST_F(CoordinatorTest, AdoptsExpiredPollingRowsBeforeClaimingNewOnes) {
  db.adoptable = {db.NewClaim(JobState::kPolling), db.NewClaim(JobState::kPolling)};
  db.queued = 10;
  mailbox.WakeDb();
  Pass();
  ASSERT_FALSE(db.adopt_limits.empty());
  EXPECT_EQ(db.adopt_limits[0], 4);
  EXPECT_EQ(db.claim_limits[0], 2);  // the batch less the two adopted
}

// Issue 13: reading every held row of the fleet costs the database per row held, so a rescue pass does
// it only when the store says a lease may have run out unnoticed, and every full interval; otherwise
// it adopts only the rows handed back. A wake-up adopts handed-back rows only.
TEST_F(CoordinatorTest, ARescuePassReadsEveryHeldRowOnlyWhenALeaseMayHaveRunOut) {
  config.rescue_full_interval_ms = 10000;
  db.sweep_due = false;
  Pass();  // start-up: a full pass, without asking
  EXPECT_EQ(db.sweep_due_asked, 0);
  EXPECT_EQ(db.rescue_sweeps, 1);
  EXPECT_EQ(db.adopt_limits.size(), 1u);
  EXPECT_EQ(db.heartbeats_starting, (std::vector<bool>{true})) << "the first heartbeat says it started";

  clock.Advance(Millis(config.rescue_interval_ms));
  Pass();  // no lease can have run out unnoticed: handed-back rows only
  EXPECT_EQ(db.sweep_due_asked, 1);
  EXPECT_EQ(db.rescue_sweeps, 1);
  EXPECT_EQ(db.adopt_limits.size(), 1u);
  EXPECT_EQ(db.handed_back_limits.size(), 1u);

  db.sweep_due = true;  // a worker missed its heartbeat
  clock.Advance(Millis(config.rescue_interval_ms));
  Pass();
  EXPECT_EQ(db.rescue_sweeps, 2);
  EXPECT_EQ(db.adopt_limits.size(), 2u);

  db.sweep_due = false;
  mailbox.WakeDb();  // a NOTIFY (a hand-back, or new rows) between rescue passes
  Pass();
  EXPECT_EQ(db.adopt_limits.size(), 2u) << "a wake-up read every held row";
  EXPECT_EQ(db.handed_back_limits.size(), 2u);

  const int asked = db.sweep_due_asked;
  for (int t = 3 * config.rescue_interval_ms; t < config.rescue_full_interval_ms;
       t += config.rescue_interval_ms) {
    clock.Advance(Millis(config.rescue_interval_ms));
    Pass();
  }
  EXPECT_EQ(db.rescue_sweeps, 2) << "swept before the full interval with nothing due";
  EXPECT_GT(db.sweep_due_asked, asked);
  clock.Advance(Millis(config.rescue_interval_ms));
  Pass();
  EXPECT_EQ(db.rescue_sweeps, 3) << "the full pass, every UPPZY_RESCUE_FULL_INTERVAL_MS";
  EXPECT_EQ(db.adopt_limits.size(), 3u);
  EXPECT_EQ(std::count(db.heartbeats_starting.begin(), db.heartbeats_starting.end(), true), 1);
}

TEST_F(CoordinatorTest, AnOpenIncidentPausesClaimsUntilResolved) {
  db.open_incident = 7;
  db.queued = 5;
  mailbox.WakeDb();
  Pass();
  EXPECT_TRUE(mailbox.paused.load());
  EXPECT_TRUE(db.claim_limits.empty());
  EXPECT_TRUE(db.delivery_claims.empty());

  db.open_incident.reset();  // an operator resolved it
  clock.Advance(Millis(500));
  Pass();
  EXPECT_TRUE(mailbox.paused.load());  // not looked at again yet
  clock.Advance(Millis(500));
  Pass();
  EXPECT_FALSE(mailbox.paused.load());  // within a second of the resolution
  Pass();                               // the first claim filled its batch: the rest at once
  EXPECT_EQ(Claimed().size(), 5u);
}

TEST_F(CoordinatorTest, AnIncidentReportOpensTheIncidentAndPauses) {
  Pass();
  mailbox.PushIncident(IncidentReport{ErrorKind::kForbidden, 403, "HTTP 403", "", ""});
  Pass();
  EXPECT_EQ(db.incidents_opened, (std::vector<std::string>{"forbidden"}));
  EXPECT_TRUE(mailbox.paused.load());
  EXPECT_EQ(mailbox.reports_processed.load(), 1u);
}

TEST_F(CoordinatorTest, OpenBreakerClaimsNoSubmissionsButStillAdoptsPolls) {
  mailbox.breaker_state = BreakerState::kOpen;
  db.adoptable = {db.NewClaim(JobState::kPolling)};
  db.queued = 5;
  db.deliveries_queued[DeliveryKind::kFeedback] = 3;
  mailbox.WakeDb();
  Pass();
  EXPECT_TRUE(db.claim_limits.empty());
  EXPECT_TRUE(db.delivery_claims.empty());
  EXPECT_EQ(Claimed().size(), 1u);
  ASSERT_FALSE(db.heartbeats.empty());
  EXPECT_EQ(db.heartbeats.back(), "open");
}

TEST_F(CoordinatorTest, HalfOpenBreakerGetsOneProbeClaim) {
  mailbox.breaker_state = BreakerState::kHalfOpen;
  db.queued = 5;
  mailbox.WakeDb();
  Pass();
  EXPECT_EQ(db.claim_limits, (std::vector<int>{1}));
  EXPECT_EQ(Claimed().size(), 1u);

  mailbox.WakeDb();
  Pass();
  clock.Advance(Millis(config.fetch_interval_ms));
  Pass();
  EXPECT_EQ(db.claim_limits, (std::vector<int>{1}));  // the probe is out: nothing more

  mailbox.breaker_state = BreakerState::kClosed;  // the probe succeeded
  mailbox.WakeDb();
  Pass();
  EXPECT_EQ(db.claim_limits.back(), 4);
}

TEST_F(CoordinatorTest, RefusedWritesAreCountedAndReleasedFromHeld) {
  Hold(3);
  db.on_apply = [](const std::vector<JobWrite>&) {
    ApplyResult r;
    r.applied = {1};
    r.refused = {2};  // someone else holds job 2 now
    return r;
  };
  mailbox.PushWrite(Accepted(1));
  mailbox.PushWrite(Accepted(2));
  Pass();
  EXPECT_EQ(metrics.fenced_writes(), 1);
  // Job 1 is still ours (accepted keeps the lock), job 2 is not, job 3 was never written.
  EXPECT_EQ(Renewed(), (std::vector<int64_t>{1, 3}));
}

TEST_F(CoordinatorTest, DeferredWritesAreKeptInOrderAndRetried) {
  Hold(2);
  int round = 0;
  db.on_apply = [&round](const std::vector<JobWrite>& batch) {
    ApplyResult r;
    for (const auto& w : batch) {
      auto& list = (round == 0 && w.id == 1) ? r.deferred : r.applied;  // an app holds row 1 once
      if (std::find(list.begin(), list.end(), w.id) == list.end()) list.push_back(w.id);
    }
    ++round;
    return r;
  };
  mailbox.PushWrite(Accepted(1));
  mailbox.PushWrite(Completed(1));
  mailbox.PushWrite(Accepted(2));
  Pass();
  ASSERT_EQ(db.job_batches.size(), 1u);
  mailbox.PushWrite(Completed(2));  // arrives while row 1 waits: it goes after row 1's writes
  clock.Advance(Millis(250));
  Pass();
  ASSERT_EQ(db.job_batches.size(), 2u);
  const auto& retried = db.job_batches[1];
  ASSERT_EQ(Ids(retried), (std::vector<int64_t>{1, 1, 2}));
  EXPECT_EQ(retried[0].new_state, JobState::kPolling);
  EXPECT_EQ(retried[1].new_state, JobState::kCompleted);
  EXPECT_EQ(retried[2].new_state, JobState::kCompleted);
  EXPECT_EQ(metrics.fenced_writes(), 0);
  clock.Advance(Millis(250));
  Pass();
  EXPECT_EQ(db.job_batches.size(), 2u);  // nothing left to write
}

TEST_F(CoordinatorTest, AWriteRefusedForGoodIsReplacedByTheFailureWrite) {
  Hold(3);
  db.on_apply = [](const std::vector<JobWrite>& batch) {
    for (const auto& w : batch) {
      if (w.answer && *w.answer == "poison") {
        throw StoreError("invalid byte sequence for encoding \"UTF8\"", /*transient=*/false, "22021");
      }
    }
    ApplyResult r;
    for (const auto& w : batch) r.applied.push_back(w.id);
    return r;
  };
  mailbox.PushWrite(Completed(1));
  mailbox.PushWrite(Completed(2, "poison"));
  mailbox.PushWrite(Completed(3));
  Pass();
  // The batch, then one write at a time; job 2's write is replaced by a guarded failure.
  ASSERT_EQ(db.job_batches.size(), 5u);
  EXPECT_EQ(Ids(db.job_batches[0]), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(Ids(db.job_batches[1]), (std::vector<int64_t>{1}));
  EXPECT_EQ(Ids(db.job_batches[2]), (std::vector<int64_t>{2}));
  const JobWrite& fallback = db.job_batches[3].at(0);
  EXPECT_EQ(fallback.id, 2);
  EXPECT_EQ(fallback.expected_state, JobState::kPolling);
  EXPECT_EQ(fallback.new_state, JobState::kFailed);
  EXPECT_FALSE(fallback.answer);
  ASSERT_TRUE(fallback.error);
  EXPECT_EQ(fallback.error->kind, ErrorKind::kInvalidResponse);
  EXPECT_NE(fallback.error->message.find("SQLSTATE 22021"), std::string::npos) << fallback.error->message;
  EXPECT_EQ(Ids(db.job_batches[4]), (std::vector<int64_t>{3}));
  EXPECT_EQ(metrics.rejected_writes(), 1);
  EXPECT_EQ(metrics.fenced_writes(), 0);
  EXPECT_EQ(db.connects, 1);  // not an outage
}

TEST_F(CoordinatorTest, ATransientErrorKeepsEveryWriteAndReconnects) {
  Hold(2);
  bool fail = true;
  db.on_apply = [&fail](const std::vector<JobWrite>& batch) {
    if (fail) {
      fail = false;
      throw StoreError("server closed the connection unexpectedly", /*transient=*/true);
    }
    ApplyResult r;
    for (const auto& w : batch) r.applied.push_back(w.id);
    return r;
  };
  mailbox.PushWrite(Accepted(1));
  mailbox.PushWrite(Completed(2));
  db.down = true;
  Pass();
  EXPECT_EQ(db.job_batches.size(), 1u);
  EXPECT_EQ(metrics.rejected_writes(), 0);

  clock.Advance(Millis(100));
  Pass();  // still down: nothing tried, nothing lost
  EXPECT_EQ(db.job_batches.size(), 1u);
  db.down = false;
  clock.Advance(Millis(200));  // the reconnect delay doubled
  Pass();
  EXPECT_EQ(db.connects, 2);
  ASSERT_EQ(db.job_batches.size(), 2u);
  EXPECT_EQ(Ids(db.job_batches[1]), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(db.job_batches[1][0].new_state, JobState::kPolling);
  // After an outage the leases are renewed at once: job 1 is still ours.
  ASSERT_FALSE(db.renewals.empty());
  EXPECT_EQ(db.renewals.back(), (std::vector<int64_t>{1}));
}

TEST_F(CoordinatorTest, CancellationsOfHeldRowsArePassedToTheEngine) {
  Hold(2);
  db.cancel_requested = {2};
  clock.Advance(Millis(1000));
  Pass();
  EXPECT_EQ(mailbox.TakeCancels(), (std::vector<int64_t>{2}));
}

TEST_F(CoordinatorTest, StopsOnceTheEngineIsDoneAndEverythingIsStored) {
  Hold(1);
  mailbox.PushWrite(Completed(1));
  mailbox.engine_done = true;
  Pass();  // the write is stored first
  EXPECT_EQ(db.job_batches.size(), 1u);
  EXPECT_FALSE(coordinator->RunOnce(all_done));
  EXPECT_TRUE(db.stopped);
}

TEST_F(CoordinatorTest, DeliveriesAreClaimedPerKindWithinTheirShare) {
  db.deliveries_queued[DeliveryKind::kFeedback] = 10;
  db.deliveries_queued[DeliveryKind::kSessionClose] = 1;
  mailbox.WakeDb();
  Pass();
  ASSERT_EQ(db.delivery_claims.size(), 2u);
  EXPECT_EQ(db.delivery_claims[0], std::make_pair(DeliveryKind::kFeedback, 4));
  EXPECT_EQ(db.delivery_claims[1], std::make_pair(DeliveryKind::kSessionClose, 4));
  EXPECT_EQ(mailbox.TakeDeliveries().size(), 5u);
}

// What each wake-up of uppzy_chat_jobs_wakeup asks to claim, by the payload its trigger sends.
TEST(MailboxWake, APayloadNamesTheClaimsItMayHaveMadeWorthRunning) {
  const struct {
    const char* payload;
    unsigned what;
  } cases[] = {
      {"", Mailbox::kWakeJobs},  // an INSERT of chat jobs (chat_jobs_wake)
      {"retry", Mailbox::kWakeJobs},
      {"handback", Mailbox::kWakeJobs},
      {"cancel", Mailbox::kWakeJobs},
      {"delivery", Mailbox::kWakeDeliveries},  // ratings and session closes
      {"incident", Mailbox::kWakeAll},         // a resolved incident frees both kinds
      {"sites", Mailbox::kWakeAll},            // so does a site's change or resume
      {"from-a-newer-version", Mailbox::kWakeAll},
  };
  for (const auto& c : cases)
    EXPECT_EQ(Mailbox::WakeForPayload(c.payload), c.what) << "'" << c.payload << "'";
}

// An app's INSERT of chat jobs wakes only the jobs' claim and a rating only the deliveries' claims: a
// busy app's every INSERT costs one claim statement, not three. The timed fallback claims both.
TEST_F(CoordinatorTest, AWakeUpClaimsOnlyTheKindsItsNotifyNamed) {
  mailbox.listening = true;
  Pass();  // start-up: both kinds
  const size_t deliveries_at_start = db.delivery_claims.size();
  ASSERT_EQ(deliveries_at_start, 2u);

  db.queued = 2;
  db.deliveries_queued[DeliveryKind::kFeedback] = 1;
  mailbox.WakeDb(Mailbox::WakeForPayload(""));
  Pass();
  EXPECT_EQ(Claimed().size(), 2u);
  EXPECT_EQ(db.delivery_claims.size(), deliveries_at_start) << "a new chat job claimed ratings and closes";
  EXPECT_TRUE(mailbox.TakeDeliveries().empty());

  const size_t job_claims = db.claim_limits.size();
  mailbox.WakeDb(Mailbox::WakeForPayload("delivery"));
  Pass();
  EXPECT_EQ(db.claim_limits.size(), job_claims) << "a new rating claimed chat jobs";
  EXPECT_EQ(mailbox.TakeDeliveries().size(), 1u);

  mailbox.WakeDb(Mailbox::WakeForPayload("incident"));
  Pass();
  EXPECT_EQ(db.claim_limits.size(), job_claims + 1);
  EXPECT_EQ(db.delivery_claims.size(), deliveries_at_start + 4);

  db.deliveries_queued[DeliveryKind::kSessionClose] = 1;  // inserted without a NOTIFY reaching us
  clock.Advance(Millis(config.fetch_interval_ms));        // holding work: the fallback is the fetch interval
  Pass();
  EXPECT_EQ(mailbox.TakeDeliveries().size(), 1u) << "the timed fallback claims every kind";
}

}  // namespace
}  // namespace uppzy::runtime
