// The coordinator: every SQL statement the worker runs, on one thread with one connection.
//
// It claims rows in batches sized to free capacity, applies the engine's writes in batches (one
// guarded statement per round), renews leases for every held row in one statement every third of
// the lease, rescues expired rows, and watches the incident table. When the database is away it
// keeps every write it was given and retries with backoff; it never drops an outcome, and it makes
// no claims until the database is back. Not thread-safe: Run() owns its thread.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <unordered_set>

#include "runtime/mailbox.h"
#include "uppzy/config.h"
#include "uppzy/delivery_store.h"
#include "uppzy/store.h"
#include "uppzy/worker.h"

namespace uppzy::runtime {

// Milliseconds on the steady clock (WorkerCounters::db_progress_at_ms).
long long SteadyMs();

class Coordinator {
 public:
  Coordinator(const Config& config, const WorkerOptions& options, Mailbox& mailbox, WorkerCounters& counters);

  // Runs until the engine is done and every write is stored (or the database stayed away past the
  // shutdown grace period). Sets `all_done` when until_empty finds nothing left to do.
  void Run(std::atomic<bool>& all_done);

 private:
  using Steady = std::chrono::steady_clock;

  bool EnsureConnected();
  void ProcessReports();
  void ApplyWrites();
  void RenewLeases();
  void CheckIncident();
  void Rescue();
  void Claim(bool adopt);
  void Disconnect(const StoreError& e);
  void CheckCancels();
  void ApplyDeliveryWrites();
  void ClaimDeliveries();
  void Heartbeat();

  const Config& config_;
  WorkerOptions options_;
  Mailbox& mailbox_;
  WorkerCounters& counters_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<DeliveryStore> deliveries_;  // ratings and session closes, on their own connection
  std::vector<JobWrite> pending_writes_;
  std::vector<IncidentReport> pending_reports_;
  std::unordered_set<int64_t> held_;
  std::vector<DeliveryWrite> pending_delivery_writes_;
  std::set<DeliveryRef> held_deliveries_;
  bool more_waiting_ = true;
  bool more_deliveries_ = false;  // the last delivery claim filled its room  // the last claim filled its
                                  // batch: claim again as soon as there is room
  bool was_paused_ = false;
  int reconnect_delay_ms_ = 100;
  Steady::time_point next_connect_{};
  Steady::time_point next_fetch_{};
  Steady::time_point next_renew_{};
  Steady::time_point next_rescue_{};
  Steady::time_point next_incident_check_{};
  Steady::time_point next_empty_check_{};
  bool db_down_logged_ = false;
  std::string last_db_error_;     // the latest StoreError, for the exit line
  bool cancel_supported_ = true;  // false on a schema without cancel_requested_at (before 0002)
  bool probe_claimed_ = false;    // half-open breaker: the one probe claim was made
  int last_breaker_state_ = 0;
  Steady::time_point next_cancel_check_{};
  Steady::time_point next_heartbeat_{};
};

}  // namespace uppzy::runtime
