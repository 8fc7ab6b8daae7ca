// What the engine (HTTP thread) and the coordinator (SQL thread) hand each other. Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/breaker.h"
#include "uppzy/delivery.h"
#include "uppzy/delivery_write.h"
#include "uppzy/job.h"
#include "uppzy/job_write.h"

namespace uppzy::runtime {

// A 401/403 seen by the engine; the coordinator opens (or joins) the incident row.
struct IncidentReport {
  ErrorKind kind = ErrorKind::kUnauthorized;
  int http_status = 0;
  std::string detail;
  std::string site_id;      // the site whose key was refused
  std::string fingerprint;  // of the key the refused request carried ("" when it carried none)
};

// A 429 seen by the engine; the coordinator blocks the site in the shared budget (BudgetsBlock).
struct RateLimitReport {
  std::string site_id;
  int64_t block_ms = 0;
  double own_rate_per_s = 0;  // this worker's recent request rate to the site
};

// The shared budget as the engine sees it (published by the coordinator after each grant).
struct BudgetView {
  // Sites whose calls need a token (a limit in uppzy.sites, or one learned from 429s). Others send
  // freely.
  std::set<std::string> budgeted;
};

class Mailbox {
 public:
  // Engine -> coordinator.
  void PushWrite(JobWrite w) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writes_.empty()) first_write_at_ = std::chrono::steady_clock::now();
      writes_.push_back(std::move(w));
    }
    db_cv_.notify_one();
  }
  void PushDeliveryWrite(DeliveryWrite w) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      delivery_writes_.push_back(std::move(w));
    }
    db_cv_.notify_one();
  }
  void PushIncident(IncidentReport r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reports_.push_back(std::move(r));
    }
    db_cv_.notify_one();
  }
  // What a wake-up asks the coordinator to claim (a bit set).
  static constexpr unsigned kWakeJobs = 1;
  static constexpr unsigned kWakeDeliveries = 2;
  static constexpr unsigned kWakeAll = kWakeJobs | kWakeDeliveries;
  // What a NOTIFY on uppzy_chat_jobs_wakeup asks to claim, by its payload (the triggers of migrations/
  // and kNotifyHandBack): '' new chat jobs, 'retry' requeued jobs, 'handback' polling rows to adopt,
  // 'cancel' a held job to cancel: the jobs' claim; 'delivery' new or requeued ratings and session
  // closes: the deliveries' claims; anything else ('incident', 'sites', or a payload this version does
  // not know): both.
  static unsigned WakeForPayload(std::string_view payload) {
    if (payload.empty() || payload == "retry" || payload == "handback" || payload == "cancel")
      return kWakeJobs;
    if (payload == "delivery") return kWakeDeliveries;
    return kWakeAll;
  }
  // Anyone -> coordinator: something changed (NOTIFY arrived, stop requested). `what` says which
  // claims the change may have made worth running (a NOTIFY of new chat jobs: only the jobs' claim).
  void WakeDb(unsigned what = kWakeAll) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      db_wake_ = true;
      db_wake_for_ |= what;
    }
    db_cv_.notify_one();
  }
  void PushRateLimit(RateLimitReport r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      rate_limits_.push_back(std::move(r));
    }
    db_cv_.notify_one();
  }
  std::vector<RateLimitReport> TakeRateLimits() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<RateLimitReport> out;
    out.swap(rate_limits_);
    return out;
  }
  // Engine -> coordinator: per budgeted site, the calls waiting for a token now (replaces the last
  // figure). Wakes the coordinator when a site's demand appears or grows.
  void SetDemand(std::map<std::string, int> demand) {
    bool grew = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [site, n] : demand) {
        auto it = demand_.find(site);
        grew = grew || it == demand_.end() || n > it->second;
      }
      demand_ = std::move(demand);
      if (grew) demand_grew_ = true;
    }
    if (grew) db_cv_.notify_one();
  }
  // Coordinator: the latest demand; clears the wake it caused.
  std::map<std::string, int> Demand() {
    std::lock_guard<std::mutex> lock(mu_);
    demand_grew_ = false;
    return demand_;
  }
  // Coordinator: waits until there is work for it (or a wake was requested) or `until` passes. Takes
  // nothing: TakeForDb() does.
  //
  // Job writes may linger: until `batch` of them wait or the first has waited `linger`, so a busy
  // engine's writes reach PostgreSQL in fewer, larger statements (each statement and commit costs the
  // database more than a row in it). Anything else wakes it at once.
  void WaitForDb(std::chrono::steady_clock::time_point until,
                 std::chrono::milliseconds linger = std::chrono::milliseconds(0), size_t batch = 1) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      if (db_wake_ || !delivery_writes_.empty() || !reports_.empty() || !rate_limits_.empty() ||
          demand_grew_) {
        return;
      }
      auto deadline = until;
      if (!writes_.empty()) {
        const auto due = first_write_at_ + linger;
        if (writes_.size() >= batch || std::chrono::steady_clock::now() >= due) return;
        deadline = std::min(deadline, due);
      }
      if (std::chrono::steady_clock::now() >= deadline) return;
      db_cv_.wait_until(lock, deadline);
    }
  }
  // Coordinator: appends everything the engine sent, in order; returns whether a wake was requested
  // (and clears the request). Never blocks on anything but the mailbox's own lock.
  // Returns the wake-ups since the last call (kWake* bits; 0: none).
  unsigned TakeForDb(std::vector<JobWrite>* writes, std::vector<DeliveryWrite>* delivery_writes,
                     std::vector<IncidentReport>* reports) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& w : writes_) writes->push_back(std::move(w));
    writes_.clear();
    for (auto& w : delivery_writes_) delivery_writes->push_back(std::move(w));
    delivery_writes_.clear();
    for (auto& r : reports_) reports->push_back(std::move(r));
    reports_.clear();
    const unsigned wake = db_wake_ ? db_wake_for_ : 0;
    db_wake_ = false;
    db_wake_for_ = 0;
    return wake;
  }

  // Coordinator -> engine.
  void PushJobs(std::vector<ClaimedJob> jobs) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& j : jobs) jobs_.push_back(std::move(j));
    }
    if (wake_engine_) wake_engine_();
  }
  void PushDeliveries(std::vector<ClaimedDelivery> deliveries) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& d : deliveries) deliveries_.push_back(std::move(d));
    }
    if (wake_engine_) wake_engine_();
  }
  std::vector<ClaimedDelivery> TakeDeliveries() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ClaimedDelivery> out;
    out.swap(deliveries_);
    return out;
  }
  std::vector<ClaimedJob> TakeJobs() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ClaimedJob> out;
    out.swap(jobs_);
    return out;
  }
  void SetEngineWaker(std::function<void()> f) { wake_engine_ = std::move(f); }
  void WakeEngine() {
    if (wake_engine_) wake_engine_();
  }

  // Coordinator -> engine: held jobs whose cancellation was requested (cancel_requested_at set).
  void PushCancels(std::vector<int64_t> ids) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int64_t id : ids) cancels_.push_back(id);
    }
    if (wake_engine_) wake_engine_();
  }
  std::vector<int64_t> TakeCancels() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int64_t> out;
    out.swap(cancels_);
    return out;
  }

  // Coordinator -> engine: tokens granted per site (added to what the engine holds), and which sites
  // are budgeted. The engine takes the tokens each pass.
  void PushTokens(const std::map<std::string, int>& tokens, BudgetView view) {
    auto next = std::make_shared<const BudgetView>(std::move(view));
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [site, n] : tokens) tokens_[site] += n;
      budget_ = std::move(next);
    }
    if (wake_engine_) wake_engine_();
  }
  std::map<std::string, int> TakeTokens() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, int> out;
    out.swap(tokens_);
    return out;
  }
  // Null until the coordinator's first grant (the engine then holds no work yet).
  std::shared_ptr<const BudgetView> Budget() const {
    std::lock_guard<std::mutex> lock(mu_);
    return budget_;
  }

  // Set by the engine only: the circuit breaker's state. The coordinator claims no new submissions
  // while it is open, and one at a time while it is half-open.
  std::atomic<BreakerState> breaker_state{BreakerState::kClosed};

  // Set by the coordinator only: the sites with an open incident for their key. No Uppzy call is made
  // for them; the other sites go on. `paused` is true when every site this worker serves is paused.
  void SetPausedSites(std::set<std::string> sites) {
    auto next = std::make_shared<const std::set<std::string>>(std::move(sites));
    std::lock_guard<std::mutex> lock(mu_);
    paused_sites_ = std::move(next);
  }
  std::shared_ptr<const std::set<std::string>> PausedSites() const {
    std::lock_guard<std::mutex> lock(mu_);
    return paused_sites_;
  }
  std::atomic<bool> paused{false};
  // Incident reports the coordinator has processed (the engine stays paused until it catches up).
  std::atomic<unsigned long long> reports_processed{0};
  // Stop requested: no new claims.
  std::atomic<bool> stopping{false};
  // The listener is connected and LISTENing: new rows wake the coordinator, so an idle coordinator
  // may look for work without a NOTIFY only every UPPZY_LISTEN_FALLBACK_MS (set by the listen thread).
  std::atomic<bool> listening{false};
  // The engine has handed back everything and exited its loop.
  std::atomic<bool> engine_done{false};
  // Set by the coordinator only: steady_clock milliseconds (SteadyMs) of its last pass that reached the
  // database without an error; /readyz turns 503 when it is too old.
  std::atomic<long long> db_progress_at_ms{0};

 private:
  std::shared_ptr<const std::set<std::string>> paused_sites_ =
      std::make_shared<const std::set<std::string>>();
  mutable std::mutex mu_;
  std::condition_variable db_cv_;
  std::chrono::steady_clock::time_point first_write_at_{};  // when writes_ last became non-empty
  std::vector<JobWrite> writes_;
  std::vector<IncidentReport> reports_;
  std::vector<ClaimedJob> jobs_;
  std::vector<int64_t> cancels_;
  std::vector<DeliveryWrite> delivery_writes_;
  std::vector<ClaimedDelivery> deliveries_;
  std::vector<RateLimitReport> rate_limits_;
  std::map<std::string, int> demand_;
  bool demand_grew_ = false;
  std::map<std::string, int> tokens_;
  std::shared_ptr<const BudgetView> budget_;
  bool db_wake_ = false;
  unsigned db_wake_for_ = 0;  // kWake* bits of the wake-ups db_wake_ stands for
  std::function<void()> wake_engine_;
};

}  // namespace uppzy::runtime
