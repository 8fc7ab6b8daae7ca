#include "runtime/maintenance.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/poll_plans.h"
#include "uppzy/duration.h"
#include "uppzy/error_text.h"
#include "uppzy/log.h"
#include "uppzy/metrics.h"
#include "uppzy/ops_store.h"

namespace uppzy::runtime {

Maintenance::Maintenance(const Config& config, metrics::WorkerMetrics& metrics, PollPlans* plans)
    : config_(config), metrics_(metrics), plans_(plans) {}

Maintenance::~Maintenance() { Stop(); }

void Maintenance::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Maintenance::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  store_.reset();
}

void Maintenance::Loop() {
  const auto stats_every = Millis(config_.stats_interval_ms);
  auto next_stats = Steady::now();  // at once: /readyz says "starting" until then
  // The first retention pass a little after start-up, so it never competes with the first claims.
  auto next_retention = Steady::now() + std::chrono::seconds(5);
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stopping_) {
    stop_cv_.wait_until(lock, std::min(next_stats, next_retention), [this] { return stopping_; });
    if (stopping_) break;
    const auto now = Steady::now();
    const bool retention = now >= next_retention;
    lock.unlock();
    RunOnce(retention);
    lock.lock();
    if (now >= next_stats) next_stats = Steady::now() + stats_every;
    if (retention) next_retention = Steady::now() + kRetentionInterval;
  }
}

bool Maintenance::Connect() {
  if (store_) return true;
  try {
    store_ = std::make_unique<OpsStore>(config_.database_url);
    return true;
  } catch (const StoreError& e) {
    std::lock_guard<std::mutex> lock(mu_);
    checked_ = true;
    db_ok_ = false;
    db_error_ = FirstLine(e.what());
    last_check_ = Steady::now();
    return false;
  }
}

int Maintenance::RunOnce(bool retention) {
  int purged = 0;
  if (Connect()) {
    try {
      RefreshGauges();
      if (plans_ != nullptr && Steady::now() >= next_refit_) {
        next_refit_ =
            Steady::now() + std::min<Millis>(std::chrono::seconds(30), 6 * Millis(config_.stats_interval_ms));
        RefitPlans();
      }
      if (retention) purged = Retention();
    } catch (const StoreError& e) {
      std::lock_guard<std::mutex> lock(mu_);
      checked_ = true;
      db_ok_ = false;
      db_error_ = FirstLine(e.what());
      last_check_ = Steady::now();
      if (e.transient()) {
        store_.reset();
        leads_gauges_ = false;  // the lock ended with the connection
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.SetDatabaseUp(db_ok_);
  if (!db_ok_ && !db_error_logged_) {
    LogEvent(spdlog::level::warn, "maintenance_database_unavailable", {{"detail", db_error_}});
    db_error_logged_ = true;
  } else if (db_ok_) {
    db_error_logged_ = false;
  }
  return purged;
}

void Maintenance::RefreshGauges() {
  // One statement for every gauge: an idle worker's every transaction counts (issue 13). One worker
  // counts the jobs for all; the others read its counts while they are younger than three intervals.
  WorkerGauges gauges = store_->Gauges(config_.worker_id, 3 * Millis(config_.stats_interval_ms));
  if (gauges.leads != leads_gauges_) {
    leads_gauges_ = gauges.leads;
    if (leads_gauges_) {
      LogEvent(spdlog::level::info, "gauges_leader",
               {{"detail", "this worker counts the queue gauges for every worker (uppzy.queue_gauges)"}});
    }
  }
  double oldest_queued = 0;
  for (const auto& s : gauges.states) {
    metrics_.SetQueueDepth(s.state, s.jobs);
    if (s.state == "queued") oldest_queued = s.oldest_age_seconds.value_or(0.0);
  }
  metrics_.SetOldestQueuedAge(oldest_queued);
  const long long open = gauges.open_incidents;
  metrics_.SetOpenIncidents(open);
  // Per site; the default site's NULL-site jobs count under this worker's UPPZY_SITE_ID, together with
  // any jobs naming that site.
  std::map<std::string, SiteStatus> by_site;
  for (auto& s : gauges.sites) {
    SiteStatus& t = by_site[s.is_default ? config_.site.site_id : s.site.site_id];
    t.queued += s.queued;
    t.retrying += s.retrying;
    t.submitting += s.submitting;
    t.polling += s.polling;
    t.open_incidents += s.open_incidents;
  }
  for (const auto& [site, s] : by_site) {
    metrics_.SetSiteJobs(site, "queued", s.queued);
    metrics_.SetSiteJobs(site, "retrying", s.retrying);
    metrics_.SetSiteJobs(site, "submitting", s.submitting);
    metrics_.SetSiteJobs(site, "polling", s.polling);
    metrics_.SetSiteOpenIncidents(site, s.open_incidents);
  }
  std::lock_guard<std::mutex> lock(mu_);
  checked_ = true;
  db_ok_ = true;
  db_error_.clear();
  open_incidents_ = open;
  last_check_ = Steady::now();
}

void Maintenance::RefitPlans() {
  // Each site's own settings first: its policy, and whether it polls adaptively.
  PollPlans::Map sites;
  adaptive_mode_.clear();
  for (const SitePolling& p : store_->SitesPolling()) {
    PollPlans::Site& site = sites[p.site_id];
    site.policy = config_.policy;
    if (p.poll_interval_ms) site.policy.poll_interval = Millis(*p.poll_interval_ms);
    if (p.poll_timeout_ms) site.policy.poll_timeout = Millis(*p.poll_timeout_ms);
    if (p.poll_target_delay_ms) site.policy.poll_target_delay = Millis(*p.poll_target_delay_ms);
    if (p.poll_mode) adaptive_mode_[p.site_id] = *p.poll_mode == "adaptive";
  }
  auto adaptive_mode = [&](const std::string& site) {
    const auto it = adaptive_mode_.find(site);
    return it != adaptive_mode_.end() ? it->second : config_.poll_mode == "adaptive";
  };
  // One read for every site, newest first; each adaptive site keeps its newest kAnswerSamples.
  std::map<std::string, std::vector<AnswerInterval>> seen;
  bool any_adaptive = config_.poll_mode == "adaptive";
  for (const auto& [site, mode] : adaptive_mode_) any_adaptive = any_adaptive || mode;
  if (any_adaptive) {
    // Jobs submitted in the window that ended one poll timeout (and a little) ago: all have their outcome.
    Millis settle = config_.policy.poll_timeout;
    for (const auto& [site_id, site] : sites) settle = std::max(settle, site.policy.poll_timeout);
    settle += std::chrono::seconds(5);
    for (const AnswerTimeRow& r : store_->AnswerTimesRecent(kAnswerWindow, kAnswerSamples * 10, settle)) {
      const std::string& site = r.site_id.empty() ? config_.site.site_id : r.site_id;
      if (!adaptive_mode(site)) continue;
      auto& intervals = seen[site];
      if (intervals.size() >= static_cast<size_t>(kAnswerSamples)) continue;
      intervals.push_back(
          {static_cast<double>(r.ready_after_ms), r.seen_after_ms ? static_cast<double>(*r.seen_after_ms)
                                                                  : std::numeric_limits<double>::infinity()});
    }
  }
  for (const auto& [site_id, intervals] : seen) {
    auto [it, added] = sites.try_emplace(site_id);
    if (added) it->second.policy = config_.policy;
    const AnswerTimeEstimate estimate = AnswerTimeEstimate::Fit(intervals);
    it->second.plan = PollPlan::Build(estimate, ScheduleOf(it->second.policy));
    const PollPlan& plan = it->second.plan;
    const bool adaptive = plan.adaptive();
    const bool was = adaptive_sites_.count(site_id) > 0;
    if (adaptive != was || adaptive) {
      LogEvent(adaptive != was ? spdlog::level::info : spdlog::level::debug, "poll_plan_updated",
               {{"site_id", site_id},
                {"adaptive", adaptive ? "true" : "false"},
                {"answers", std::to_string(estimate.samples())},
                {"median_answer_ms", std::to_string(std::llround(estimate.Quantile(0.5)))},
                {"expected_calls", std::to_string(plan.expected_calls())},
                {"expected_delay_ms", std::to_string(std::llround(plan.expected_delay_ms()))},
                {"first_poll_ms", adaptive ? std::to_string(plan.offsets().front().count()) : ""}});
    }
    metrics_.SetPollPlan(site_id, adaptive ? plan.expected_calls() : 0,
                         adaptive ? plan.expected_delay_ms() / 1000 : 0);
    if (adaptive) {
      adaptive_sites_.insert(site_id);
    } else {
      adaptive_sites_.erase(site_id);
    }
  }
  plans_->Publish(std::move(sites));
}

int Maintenance::Retention() {
  int total = 0;
  for (auto [state, keep] :
       {std::pair{"completed", config_.retain_completed}, std::pair{"failed", config_.retain_failed},
        std::pair{"cancelled", config_.retain_cancelled}}) {
    if (keep.count() <= 0) continue;  // "off"
    int deleted_for_state = 0;
    for (int batch = 0; batch < kMaxBatchesPerPass; ++batch) {
      {
        std::lock_guard<std::mutex> lock(stop_mu_);
        if (stopping_) return total;
      }
      const int n = store_->JobsPurge(state, keep, kPurgeBatch);
      deleted_for_state += n;
      if (n < kPurgeBatch) break;
    }
    if (deleted_for_state > 0) {
      LogEvent(spdlog::level::info, "retention_purged",
               {{"state", state},
                {"rows", std::to_string(deleted_for_state)},
                {"older_than", FormatDuration(keep)}});
    }
    total += deleted_for_state;
  }
  return total;
}

std::pair<bool, std::string> Maintenance::Ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  if (!checked_) {
    j = {{"status", "not_ready"}, {"reason", "starting"}};
    return {false, j.dump()};
  }
  const auto stale_after = Millis(std::max(3 * config_.stats_interval_ms, 3000));
  if (!db_ok_) {
    j = {{"status", "not_ready"}, {"reason", "database_unreachable"}, {"detail", db_error_}};
    return {false, j.dump()};
  }
  if (Steady::now() - last_check_ > stale_after) {
    j = {{"status", "not_ready"}, {"reason", "database_check_stale"}};
    return {false, j.dump()};
  }
  if (open_incidents_ > 0) {
    j = {{"status", "not_ready"},
         {"reason", "incident_open"},
         {"open_incidents", open_incidents_},
         {"detail", "Uppzy refused the API key; fix it, then run `uppzy-worker incidents resolve`"}};
    return {false, j.dump()};
  }
  j = {{"status", "ready"}};
  return {true, j.dump()};
}

}  // namespace uppzy::runtime
