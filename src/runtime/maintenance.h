// Maintenance: the worker's periodic upkeep on its own thread and its own database connection, so
// neither ever delays a claim or a write.
//
//   - Database gauges, every UPPZY_STATS_INTERVAL_MS: queue depth by state and site, the oldest queued
//     age, open incidents, and whether the database answered, in one statement (OpsStore::Gauges).
//     Counting the jobs reads every unfinished row, so one worker of a deployment counts them for all:
//     the one whose maintenance connection holds the gauges lock stores its counts in
//     uppzy.queue_gauges, the others read that row (and count themselves when it is older than three
//     intervals). /metrics and /readyz read this cache and never touch the database themselves.
//   - Retention, every minute: deletes finished rows older than UPPZY_RETAIN_COMPLETED / _FAILED /
//     _CANCELLED through uppzy.purge_jobs, in batches of 1000 rows, each its own short transaction.
//     Several workers may run it at once (the function skips rows another one is deleting).
//   - Each site's polling, every 30 s (6 gauge refreshes when those are more often): reads the sites'
//     own settings (uppzy.sites: poll_interval_ms, poll_timeout_ms, poll_mode, poll_target_delay_ms),
//     and for every site that polls adaptively (its poll_mode, else UPPZY_POLL_MODE) refits the
//     answer-time estimate from the jobs submitted in a kAnswerWindow that ended one poll timeout ago
//     (so all of them have their outcome; the newest *finished* jobs of a burst are its slowest
//     answers, and would bias the estimate), at most kAnswerSamples per site, newest submission first;
//     publishes each site's policy and poll plan to the engine (PollPlans). A query over recent rows,
//     not a histogram row kept up to date: no extra write per job, no hot row, and a new worker starts
//     warm from what every worker stored; a vendor that gets slower leaves the window in 10 minutes at
//     the most.
//
// Start()/Stop() are called from one thread; Ready() from any thread. RunOnce() is for tests (and runs
// on the caller's thread; do not mix it with Start()).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "uppzy/config.h"

namespace uppzy {
class OpsStore;
}
namespace uppzy::metrics {
class WorkerMetrics;
}

namespace uppzy::runtime {
class PollPlans;

class Maintenance {
 public:
  static constexpr int kPurgeBatch = 1000;
  // Per state and pass, so one pass stays short however large the backlog; the next pass goes on.
  static constexpr int kMaxBatchesPerPass = 100;
  static constexpr std::chrono::seconds kRetentionInterval{60};
  static constexpr std::chrono::minutes kAnswerWindow{10};
  static constexpr int kAnswerSamples = 2000;

  // `config` and `metrics` (where the database gauges go) must outlive the maintenance, and `plans`
  // (where adaptive polling's plans go; may be null: no refits) too.
  Maintenance(const Config& config, metrics::WorkerMetrics& metrics, PollPlans* plans = nullptr);
  ~Maintenance();
  Maintenance(const Maintenance&) = delete;
  Maintenance& operator=(const Maintenance&) = delete;

  // Runs the loop on its own thread; the first refresh happens at once.
  void Start();
  // Stops the loop and closes the connection. Idempotent.
  void Stop();

  // Refreshes the gauges and readiness; with `retention`, also runs one retention pass. Returns the
  // rows deleted. Never throws: database errors are logged and reported by Ready().
  int RunOnce(bool retention = true);

  // {ready, one-line JSON reason}: ready when the last refresh (no older than three intervals)
  // reached the database and found no open incident.
  std::pair<bool, std::string> Ready() const;

 private:
  using Steady = std::chrono::steady_clock;
  void Loop();
  bool Connect();
  void RefreshGauges();
  int Retention();
  void RefitPlans();

  const Config& config_;
  metrics::WorkerMetrics& metrics_;
  PollPlans* plans_;
  std::unique_ptr<OpsStore> store_;
  Steady::time_point next_refit_{};
  bool leads_gauges_ = false;                  // the last gauges said this connection counts for every worker
  std::set<std::string> adaptive_sites_;       // the sites whose last plan was adaptive (for the log)
  std::map<std::string, bool> adaptive_mode_;  // sites with a poll_mode of their own: adaptive or not
  std::thread thread_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;

  mutable std::mutex mu_;  // guards the fields below (read by Ready() from the HTTP thread)
  bool checked_ = false;
  bool db_ok_ = false;
  long long open_incidents_ = 0;
  std::string db_error_;
  Steady::time_point last_check_{};
  bool db_error_logged_ = false;
};

}  // namespace uppzy::runtime
