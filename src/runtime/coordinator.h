// The coordinator: every SQL statement the worker runs, on one thread with one connection.
//
// It claims rows in batches sized to free capacity, applies the engine's writes in batches (one
// guarded statement per round), renews leases for every held row in one statement every third of
// the lease, rescues expired rows, and watches the incident table. When the database is away it
// keeps every write it was given and retries with backoff; it never drops an outcome, and it makes
// no claims until the database is back.
//
// Seams: the coordinator reaches the database only through the stores its WorkerStoreFactory makes
// (reconnecting is making new ones) and reads time only from its ClockSource, so a test drives it with
// fake stores and a fake clock, one RunOnce() at a time, feeding it through the mailbox.
//
// Not thread-safe: Run() (or RunOnce()) owns its thread. Nothing here throws: database errors are
// caught at the loop's edge, logged, and retried.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_set>

#include "runtime/mailbox.h"
#include "uppzy/clock.h"
#include "uppzy/config.h"
#include "uppzy/metrics.h"
#include "uppzy/worker.h"
#include "uppzy/worker_store.h"

namespace uppzy {
class KeyRing;
}

namespace uppzy::runtime {

// Milliseconds on the steady clock (Mailbox::db_progress_at_ms).
long long SteadyMs();
long long SteadyMs(SteadyTimePoint t);

// The production stores: a Store and a DeliveryStore on `database_url`, two connections.
WorkerStoreFactory PostgresWorkerStores(std::string database_url);

class Coordinator {
 public:
  // `config`, `mailbox`, `metrics` and `clock` must outlive the coordinator. `stores` is called to
  // (re)connect; it may throw StoreError. Never throws.
  // `keys`, if given, must outlive it too: the sites it holds keys for are the only ones it claims work
  // of (read at every claim, so a key file added or removed counts at once). Without it, only the
  // default site (config.site).
  Coordinator(const Config& config, const WorkerOptions& options, Mailbox& mailbox,
              metrics::WorkerMetrics& metrics, WorkerStoreFactory stores, const ClockSource& clock,
              const KeyRing* keys = nullptr);

  // Runs until the engine is done and every write is stored (or the database stayed away past the
  // shutdown grace period). Sets `all_done` when until_empty finds nothing left to do.
  void Run(std::atomic<bool>& all_done);

  // One pass of the loop, without waiting: takes what the engine sent, (re)connects when due, and does
  // every database task due at clock.SteadyNow(): incident reports, writes, lease renewal, heartbeat,
  // cancellations, the incident check, rescue and claims (at once when a wake was requested). Returns
  // false once Run should return (see Run). Sets `all_done` as Run does.
  bool RunOnce(std::atomic<bool>& all_done);

 private:
  using Steady = std::chrono::steady_clock;

  // When the next pass is due, if nothing arrives in the mailbox first.
  Steady::time_point NextPassAt(Steady::time_point now) const;
  bool EnsureConnected();
  void ProcessReports();
  void ApplyWrites();
  void RenewLeases();
  void CheckIncident();
  // Runs the rescue pass when it is due (it claims too); true if it ran. It reads every held row of
  // the fleet (rescue of submissions, adoption of every expired poll) only when the store says a lease
  // may have run out (a worker missed its heartbeat or started) or the full pass is due
  // (UPPZY_RESCUE_FULL_INTERVAL_MS); otherwise it adopts handed-back rows only.
  bool Rescue();
  // An idle worker whose listener works: nothing held, nothing to write, no claim left unfinished. New
  // rows wake it through NOTIFY, so its fallback claim, rescue and incident check slow to
  // UPPZY_LISTEN_FALLBACK_MS (an idle worker makes under one database transaction per second).
  bool Quiet() const;
  // Enough free room for a claim worth its cost (see the definition).
  bool RoomToClaim() const;
  // Remembers when a retry this worker wrote comes due (run_at), so a claim runs then.
  void NoteRetryDue(const std::optional<TimePoint>& run_at);
  Millis FetchInterval() const;
  Millis RescueInterval() const;
  // Which expired polling rows a claim adopts first: none, those handed back (cheap: an index that is
  // usually empty), or every one (reads every held row).
  enum class Adopt { kNone, kHandedBack, kAll };
  void Claim(Adopt adopt);
  void Disconnect(const StoreError& e);
  void CheckCancels();
  void ApplyDeliveryWrites();
  void ClaimDeliveries();
  void Heartbeat();
  // The sites this worker serves (those it holds keys for), and a claim scope over them.
  std::vector<std::string> Sites() const;
  // With the shared budget, a budgeted site's share is capped by what this pass's grant allows
  // (claim_caps_; 0 when no grant ran this pass).
  ClaimScope Scope(int room) const;
  // The shared budget: reports 429s (BudgetsBlock), and when due takes tokens for the engine's waiting
  // calls and, when `claiming`, for new submissions, in one statement; hands the tokens to the engine
  // and sets claim_caps_. `woken`: a NOTIFY came (maybe a change to uppzy.sites).
  void Budget(bool claiming, bool woken);
  bool BudgetOn() const { return config_.shared_budget == "on"; }
  // Budgeted (or not yet known) sites' caps after a claim took `claimed`: budget_more_ when a cap bound.
  void SpendCaps(const std::vector<ClaimedJob>& claimed);
  // The fingerprint of the key this worker has for `site` now ("" if none).
  std::string FingerprintOf(const std::string& site) const;
  // Publishes the paused sites to the engine (and `paused` when they are all of ours).
  void PublishPaused(std::set<std::string> paused);

  const Config& config_;
  WorkerOptions options_;
  Mailbox& mailbox_;
  metrics::WorkerMetrics& metrics_;
  WorkerStoreFactory make_stores_;
  const ClockSource& clock_;
  const KeyRing* keys_;
  std::unique_ptr<WorkerJobStore> store_;
  std::unique_ptr<WorkerDeliveryStore> deliveries_;  // ratings and session closes, on their own connection
  std::vector<JobWrite> pending_writes_;
  std::vector<IncidentReport> pending_reports_;
  std::unordered_set<int64_t> held_;
  std::vector<DeliveryWrite> pending_delivery_writes_;
  std::set<DeliveryRef> held_deliveries_;
  bool more_waiting_ = true;      // the last claim filled its batch: claim again as soon as there is room
  bool more_deliveries_ = false;  // the last delivery claim filled its room
  int reconnect_delay_ms_ = 100;
  Steady::time_point next_connect_{};
  std::set<Steady::time_point> retries_due_;  // run_at of our own retries, on the steady clock
  Steady::time_point next_fetch_{};
  Steady::time_point next_renew_{};
  Steady::time_point next_rescue_{};
  Steady::time_point next_full_sweep_{};  // the next rescue pass that reads every held row regardless
  bool heartbeat_written_ = false;        // the process's first heartbeat went (started_at)
  Steady::time_point next_incident_check_{};
  Steady::time_point next_empty_check_{};
  bool db_down_logged_ = false;
  std::string last_db_error_;     // the latest StoreError, for the exit line
  bool cancel_supported_ = true;  // false on a schema without cancel_requested_at (before 0002)
  bool probe_claimed_ = false;    // half-open breaker: the one probe claim was made
  BreakerState last_breaker_state_ = BreakerState::kClosed;
  std::optional<Steady::time_point> stop_deadline_;  // set when the engine is first seen done
  bool error_pause_ = false;  // the last pass met a lasting database error: Run pauses before the next
  Steady::time_point next_cancel_check_{};
  Steady::time_point next_heartbeat_{};
  // The shared budget.
  std::map<std::string, BudgetGrant> budget_;  // the last grant per site (budgeted or not)
  Steady::time_point budget_asked_at_{};       // when every served site was last asked about
  Steady::time_point next_grant_{};            // grants at most every 100 ms
  std::map<std::string, int> demand_;          // the engine's calls waiting for a token, per site
  std::map<std::string, int> claim_caps_;      // this pass: new submissions a budgeted site may take
  bool budget_more_ = false;  // a budgeted site's claim was capped: claim again at the next grant
};

}  // namespace uppzy::runtime
