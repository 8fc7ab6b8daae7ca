#include "runtime/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <set>
#include <thread>

#include "uppzy/breaker.h"
#include "uppzy/budget.h"
#include "uppzy/delivery_store.h"
#include "uppzy/key_ring.h"
#include "uppzy/log.h"
#include "uppzy/store.h"

namespace uppzy::runtime {

long long SteadyMs() { return SteadyMs(std::chrono::steady_clock::now()); }

long long SteadyMs(SteadyTimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

WorkerStoreFactory PostgresWorkerStores(std::string database_url) {
  return [url = std::move(database_url)] {
    WorkerStores s;
    s.jobs = std::make_unique<Store>(url);
    s.deliveries = std::make_unique<DeliveryStore>(url);
    return s;
  };
}

Coordinator::Coordinator(const Config& config, const WorkerOptions& options, Mailbox& mailbox,
                         metrics::WorkerMetrics& metrics, WorkerStoreFactory stores, const ClockSource& clock,
                         const KeyRing* keys)
    : config_(config),
      options_(options),
      mailbox_(mailbox),
      metrics_(metrics),
      make_stores_(std::move(stores)),
      clock_(clock),
      keys_(keys) {}

std::vector<std::string> Coordinator::Sites() const {
  if (keys_ == nullptr) return {config_.site.site_id};
  return keys_->Sites();
}

ClaimScope Coordinator::Scope(int room) const {
  // A site with an open incident is left out: its work waits (and its polling rows stay unadopted).
  const auto paused = mailbox_.PausedSites();
  std::vector<std::string> sites;
  for (auto& site : Sites()) {
    if (paused->count(site) == 0) sites.push_back(std::move(site));
  }
  ClaimScope scope =
      ClaimScope::Fair(keys_ != nullptr ? keys_->DefaultSite() : config_.site.site_id, sites, room);
  if (BudgetOn()) {
    for (auto& share : scope.shares) {
      const auto known = budget_.find(share.site_id);
      if (known != budget_.end() && !known->second.budgeted) continue;  // no limit: the whole room
      // Budgeted, or not known yet: only what this pass's grant allows. Over-limit work stays queued
      // instead of being claimed and put back.
      const auto cap = claim_caps_.find(share.site_id);
      share.limit = std::min(share.limit, cap == claim_caps_.end() ? 0 : cap->second);
    }
  }
  return scope;
}

void Coordinator::Budget(bool claiming, bool woken) {
  if (!BudgetOn()) return;
  const auto now = clock_.SteadyNow();
  for (auto& r : mailbox_.TakeRateLimits()) {
    store_->BudgetsBlock(r.site_id, r.block_ms, r.own_rate_per_s);
    metrics_.BudgetStatement();
    LogEvent(spdlog::level::warn, "site_rate_limited",
             {{"site_id", r.site_id},
              {"block_ms", std::to_string(r.block_ms)},
              {"detail",
               "Uppzy answered 429: no worker calls this site until the block ends, and its rate "
               "is lowered (uppzy.site_limits)"}});
    budget_asked_at_ = {};  // ask again at once: the site is budgeted now
  }
  demand_ = mailbox_.Demand();
  claim_caps_.clear();
  bool waiting = false;
  for (const auto& [site, n] : demand_) waiting = waiting || n > 0;
  if (now < next_grant_ || (!claiming && !waiting)) return;
  // Which sites are budgeted can change (an operator sets a limit, another worker's 429 teaches one):
  // ask about every site again each second while busy or woken (a change to uppzy.sites wakes us),
  // every 10 s while idle, and every UPPZY_LISTEN_FALLBACK_MS while quiet (see Quiet()).
  const Millis idle_refresh = Quiet() ? Millis(config_.listen_fallback_ms) : Millis(10000);
  const bool refresh = now - budget_asked_at_ >= (held_.empty() && !woken ? idle_refresh : Millis(1000));
  const int room = std::min(config_.max_in_flight - static_cast<int>(held_.size()), config_.claim_batch);
  const auto paused = mailbox_.PausedSites();
  std::vector<BudgetWant> wants;
  for (const auto& site : Sites()) {
    if (paused->count(site) > 0) continue;
    const auto d = demand_.find(site);
    const int calls = d == demand_.end() ? 0 : d->second;
    const auto known = budget_.find(site);
    const bool free = !refresh && known != budget_.end() && !known->second.budgeted;
    if (free && calls == 0) continue;  // no limit, nothing locally blocked: no need to ask
    const int slots = claiming ? std::max(room, 0) : 0;
    wants.push_back(BudgetWant{site, calls + slots, slots});
  }
  if (wants.empty()) {
    next_grant_ = now + Millis(100);  // calls wait only for paused sites: look again later, not at once
    return;
  }
  auto grants = store_->BudgetsGrant(wants, config_.site.site_id);
  metrics_.BudgetStatement();
  if (refresh) budget_asked_at_ = now;
  // The next grant: in 100 ms, unless every site that got nothing can get nothing sooner (blocked by a
  // 429, or an empty bucket refilling slower than a token per 100 ms). So a blocked or slow site costs
  // no statement per pass.
  const long long now_ms = std::chrono::duration_cast<Millis>(clock_.Now().time_since_epoch()).count();
  long long next_ms = -1;
  std::map<std::string, int> tokens;
  for (auto& g : grants) {
    const bool blocked = g.blocked_until_ms > now_ms;
    metrics_.SetSiteBudget(g.site_id, g.budgeted ? g.rate_per_s : 0, blocked);
    if (g.budgeted) {
      long long wait_ms = 100;
      if (blocked) {
        wait_ms = g.blocked_until_ms - now_ms;
      } else if (g.tokens == 0 && g.rate_per_s > 0) {
        wait_ms = static_cast<long long>(1000.0 / g.rate_per_s);
      }
      next_ms = next_ms < 0 ? wait_ms : std::min(next_ms, wait_ms);
    }
    if (g.budgeted) {
      tokens[g.site_id] = g.tokens;
      metrics_.TokensGranted(g.site_id, g.tokens);
      const auto d = demand_.find(g.site_id);
      claim_caps_[g.site_id] = SubmissionsAllowed(g.tokens, d == demand_.end() ? 0 : d->second, g.slots);
    }
    budget_[g.site_id] = std::move(g);
  }
  next_grant_ = now + Millis(std::clamp<long long>(next_ms, 100, 5000));
  BudgetView view;
  for (const auto& [site, g] : budget_) {
    if (g.budgeted) view.budgeted.insert(site);
  }
  mailbox_.PushTokens(tokens, std::move(view));
}

void Coordinator::SpendCaps(const std::vector<ClaimedJob>& claimed) {
  if (!BudgetOn()) return;
  std::map<std::string, int> taken;
  for (const auto& j : claimed) {
    if (j.state != JobState::kPolling) ++taken[j.site_id];
  }
  const auto paused = mailbox_.PausedSites();
  for (const auto& site : Sites()) {
    const auto known = budget_.find(site);
    if (paused->count(site) > 0 || (known != budget_.end() && !known->second.budgeted)) continue;
    auto cap = claim_caps_.find(site);
    const int n = taken[site];
    // The cap bound (the site may have more work than its tokens allowed): claim again at the next grant.
    if (cap == claim_caps_.end() || n >= cap->second) budget_more_ = true;
    if (cap != claim_caps_.end()) cap->second = std::max(0, cap->second - n);
  }
}

bool Coordinator::EnsureConnected() {
  if (store_) return true;
  if (clock_.SteadyNow() < next_connect_) return false;
  try {
    WorkerStores stores = make_stores_();
    store_ = std::move(stores.jobs);
    deliveries_ = std::move(stores.deliveries);
    if (db_down_logged_) LogEvent(spdlog::level::info, "database_reconnected", {});
    db_down_logged_ = false;
    reconnect_delay_ms_ = 100;
    // Catch up at once on whatever happened while we were away.
    const auto now = clock_.SteadyNow();
    next_fetch_ = next_rescue_ = next_incident_check_ = now;
    // After an outage our leases may be close to running out: renew at once. At start-up nothing is
    // held yet, and renewing right after the first claims would only add writes.
    next_renew_ = held_.empty() ? now + Millis(std::max(config_.lease_ms / 3, 100)) : now;
    more_waiting_ = true;
    return true;
  } catch (const StoreError& e) {
    Disconnect(e);
    return false;
  }
}

void Coordinator::Disconnect(const StoreError& e) {
  store_.reset();
  deliveries_.reset();
  if (!db_down_logged_) {
    LogEvent(spdlog::level::err, "database_unavailable",
             {{"detail", e.what()}, {"pending_writes", std::to_string(pending_writes_.size())}});
    db_down_logged_ = true;
  }
  next_connect_ = clock_.SteadyNow() + Millis(reconnect_delay_ms_);
  reconnect_delay_ms_ = std::min(reconnect_delay_ms_ * 2, 5000);
}

void Coordinator::ProcessReports() {
  while (!pending_reports_.empty()) {
    const IncidentReport& r = pending_reports_.front();
    const std::string site = r.site_id.empty() ? config_.site.site_id : r.site_id;
    const std::string fingerprint = r.fingerprint.empty() ? FingerprintOf(site) : r.fingerprint;
    auto [id, created] = store_->IncidentsOpen(std::string(ToString(r.kind)), r.http_status, r.detail, site,
                                               fingerprint, config_.worker_id);
    if (created) {
      LogEvent(spdlog::level::err, "incident_opened",
               {{"incident_id", std::to_string(id)},
                {"kind", std::string(ToString(r.kind))},
                {"http_status", std::to_string(r.http_status)},
                {"site_id", site},
                {"api_key_fingerprint", fingerprint}});
    }
    // Only this site stops, at once; the incident check keeps it stopped until the incident is resolved.
    std::set<std::string> paused = *mailbox_.PausedSites();
    paused.insert(site);
    PublishPaused(std::move(paused));
    pending_reports_.erase(pending_reports_.begin());
    ++mailbox_.reports_processed;
  }
}

namespace {

// Applies `pending` through `apply`, keeps deferred rows' writes for the next round, and isolates what
// the database refuses for good (never a lost connection): each such write is replaced by `reject`'s
// failure write for its row, so one unstorable outcome fails its own row and never wedges the others
// or the worker. Transient errors propagate with every write not yet stored still in `pending`.
// `account(batch, result)` books what was applied and refused; `dropped(write, reason)` is told about
// a row whose failure write could not be stored either.
template <typename Write, typename Result, typename Apply, typename Reject, typename Account,
          typename Dropped>
void ApplyIsolated(std::vector<Write>& pending, Apply apply, Reject reject, Account account,
                   Dropped dropped) {
  if (pending.empty()) return;
  // Writes of deferred rows stay, in order, for the next round.
  auto keep_deferred = [](const std::vector<Write>& batch, const Result& r, std::vector<Write>* out) {
    std::set<decltype(batch.front().ref())> deferred(r.deferred.begin(), r.deferred.end());
    for (const auto& w : batch) {
      if (deferred.count(w.ref())) out->push_back(w);
    }
  };
  std::vector<Write> batch;
  batch.swap(pending);
  try {
    Result r = apply(batch);
    account(batch, r);
    keep_deferred(batch, r, &pending);
    return;
  } catch (const StoreError& e) {
    if (e.transient()) {
      batch.insert(batch.end(), pending.begin(), pending.end());
      pending.swap(batch);
      throw;
    }
  }
  // One write in the batch is refused for good: find it by applying them one at a time.
  for (size_t i = 0; i < batch.size(); ++i) {
    const Write& w = batch[i];
    try {
      Result r = apply({w});
      account({w}, r);
      keep_deferred({w}, r, &pending);
      continue;
    } catch (const StoreError& e) {
      if (e.transient()) {
        pending.insert(pending.end(), batch.begin() + static_cast<std::ptrdiff_t>(i), batch.end());
        throw;
      }
      const std::string reason =
          e.sqlstate().empty() ? e.what() : e.what() + (" (SQLSTATE " + e.sqlstate() + ")");
      Write fallback = reject(w, reason);
      try {
        Result r = apply({fallback});
        account({fallback}, r);
        keep_deferred({fallback}, r, &pending);
        dropped(w, reason, /*failed_row=*/true);
      } catch (const StoreError& e2) {
        if (e2.transient()) {
          pending.insert(pending.end(), batch.begin() + static_cast<std::ptrdiff_t>(i), batch.end());
          throw;
        }
        dropped(w, reason + "; marking the row failed was refused too: " + e2.what(), /*failed_row=*/false);
      }
    }
  }
}

}  // namespace

void Coordinator::ApplyWrites() {
  if (pending_writes_.empty()) return;
  for (const auto& w : pending_writes_) NoteRetryDue(w.run_at);
  ApplyIsolated<JobWrite, ApplyResult>(
      pending_writes_,
      [&](const std::vector<JobWrite>& b) { return store_->JobsApplyWrites(config_.worker_id, b); },
      [&](const JobWrite& w, const std::string& reason) { return WriteRejected(w, reason, clock_.Now()); },
      [&](const std::vector<JobWrite>& batch, const ApplyResult& r) {
        std::unordered_set<int64_t> refused(r.refused.begin(), r.refused.end());
        std::unordered_set<int64_t> deferred(r.deferred.begin(), r.deferred.end());
        for (const auto& w : batch) {
          if (!deferred.count(w.id) && (refused.count(w.id) || w.Releases())) held_.erase(w.id);
        }
        metrics_.WritesFenced(r.refused.size());
        for (int64_t id : r.refused) {
          LogEvent(spdlog::level::warn, "write_refused",
                   {{"job_id", std::to_string(id)}, {"detail", "the row is no longer held by this worker"}});
        }
        if (!r.deferred.empty()) {
          LogEvent(spdlog::level::debug, "writes_deferred",
                   {{"jobs", std::to_string(r.deferred.size())},
                    {"detail", "another session holds these rows locked; trying again shortly"}});
        }
      },
      [&](const JobWrite& w, const std::string& reason, bool failed_row) {
        metrics_.WriteRejected();
        LogEvent(spdlog::level::err, "write_rejected",
                 {{"job_id", std::to_string(w.id)},
                  {"detail", reason},
                  {"outcome", failed_row ? "the row failed with error_kind invalid_response" : "dropped"}});
        if (!failed_row) held_.erase(w.id);
      });
}

void Coordinator::NoteRetryDue(const std::optional<TimePoint>& run_at) {
  // A retry of our own comes due with no NOTIFY: look for work then, not at the next fallback claim
  // (up to UPPZY_LISTEN_FALLBACK_MS away on a quiet worker).
  if (!run_at) return;
  retries_due_.insert(clock_.SteadyNow() +
                      std::chrono::duration_cast<Steady::duration>(*run_at - clock_.Now()));
}

void Coordinator::ApplyDeliveryWrites() {
  for (const auto& w : pending_delivery_writes_) NoteRetryDue(w.run_at);
  ApplyIsolated<DeliveryWrite, DeliveryApplyResult>(
      pending_delivery_writes_,
      [&](const std::vector<DeliveryWrite>& b) {
        return deliveries_->DeliveriesApplyWrites(config_.worker_id, b);
      },
      [&](const DeliveryWrite& w, const std::string& reason) {
        return WriteDeliveryRejected(w, reason, clock_.Now());
      },
      [&](const std::vector<DeliveryWrite>& batch, const DeliveryApplyResult& r) {
        std::set<DeliveryRef> deferred(r.deferred.begin(), r.deferred.end());
        for (const auto& w : batch) {
          if (!deferred.count(w.ref())) held_deliveries_.erase(w.ref());
        }
        metrics_.WritesFenced(r.refused.size());
        for (const auto& ref : r.refused) {
          LogEvent(spdlog::level::warn, "write_refused",
                   {{"kind", std::string(ToString(ref.kind))},
                    {"id", std::to_string(ref.id)},
                    {"detail", "the row is no longer held by this worker"}});
        }
      },
      [&](const DeliveryWrite& w, const std::string& reason, bool failed_row) {
        metrics_.WriteRejected();
        LogEvent(spdlog::level::err, "write_rejected",
                 {{"kind", std::string(ToString(w.kind))},
                  {"id", std::to_string(w.id)},
                  {"detail", reason},
                  {"outcome", failed_row ? "the row failed with error_kind invalid_response" : "dropped"}});
        held_deliveries_.erase(w.ref());
      });
}

// Ratings and session closes get their own share of capacity, so a burst of them never starves chat
// jobs (and the engine gives each kind its turn for HTTP slots).
void Coordinator::ClaimDeliveries() {
  if (mailbox_.paused || mailbox_.stopping || mailbox_.breaker_state.load() != BreakerState::kClosed) {
    return;
  }
  const int cap = std::max(16, config_.max_in_flight / 4);
  std::vector<ClaimedDelivery> claimed;
  bool more = false;
  for (DeliveryKind kind : {DeliveryKind::kFeedback, DeliveryKind::kSessionClose}) {
    int held = 0;
    for (const auto& ref : held_deliveries_) held += ref.kind == kind ? 1 : 0;
    const int room = std::min(cap - held, config_.claim_batch);
    if (room <= 0) continue;
    auto got = deliveries_->DeliveriesClaim(kind, config_.worker_id, config_.lease_ms, Scope(room), room);
    if (static_cast<int>(got.size()) == room) more = true;
    for (auto& d : got) {
      if (auto site_cap = claim_caps_.find(d.site_id); site_cap != claim_caps_.end()) {
        site_cap->second = std::max(0, site_cap->second - 1);
      }
      held_deliveries_.insert(d.ref());
      claimed.push_back(std::move(d));
    }
  }
  more_deliveries_ = more;
  if (!claimed.empty()) mailbox_.PushDeliveries(std::move(claimed));
}

void Coordinator::RenewLeases() {
  const auto now = clock_.SteadyNow();
  if (now < next_renew_ || (held_.empty() && held_deliveries_.empty())) return;
  next_renew_ = now + Millis(std::max(config_.lease_ms / 3, 100));
  if (!held_deliveries_.empty()) {
    deliveries_->DeliveriesRenewLeases(
        config_.worker_id, std::vector<DeliveryRef>(held_deliveries_.begin(), held_deliveries_.end()),
        config_.lease_ms);
  }
  if (held_.empty()) return;
  std::vector<int64_t> ids(held_.begin(), held_.end());
  auto renewed = store_->JobsRenewLeases(config_.worker_id, ids, config_.lease_ms);
  if (renewed.size() != ids.size()) {
    // Rows written back by the engine meanwhile are fine; others were taken over (we stalled).
    LogEvent(spdlog::level::debug, "leases_renewed",
             {{"held", std::to_string(ids.size())}, {"renewed", std::to_string(renewed.size())}});
  }
}

std::string Coordinator::FingerprintOf(const std::string& site) const {
  if (keys_ != nullptr) {
    if (std::optional<Key> key = keys_->Get(site)) return key->fingerprint;
  }
  return site == config_.site.site_id ? config_.site.key_fingerprint : std::string();
}

void Coordinator::PublishPaused(std::set<std::string> paused) {
  bool all = !paused.empty();
  for (const auto& site : Sites()) all = all && paused.count(site) > 0;
  mailbox_.SetPausedSites(std::move(paused));
  mailbox_.paused = all;
}

void Coordinator::CheckIncident() {
  const auto now = clock_.SteadyNow();
  if (now < next_incident_check_) return;
  // Per site: paused while an incident is open for the key it has now (a rotated key that works
  // resumes it, as does an operator's resolve). One look for every site's key.
  const auto before = mailbox_.PausedSites();
  std::set<std::string> paused;
  const std::vector<std::string> sites = Sites();
  std::vector<std::string> fingerprints;
  for (const auto& site : sites) fingerprints.push_back(FingerprintOf(site));
  const auto open_list = store_->IncidentsOpenAmong(fingerprints);
  const std::set<std::string> open_keys(open_list.begin(), open_list.end());
  for (size_t i = 0; i < sites.size(); ++i) {
    const std::string& site = sites[i];
    const std::string& fingerprint = fingerprints[i];
    const bool open = open_keys.count(fingerprint) > 0;
    const bool was = before->count(site) > 0;
    if (open) paused.insert(site);
    if (open && !was) {
      LogEvent(
          spdlog::level::err, "paused_by_open_incident",
          {{"site_id", site},
           {"api_key_fingerprint", fingerprint},
           {"detail", "an incident for this site's API key is open; run `uppzy-worker incidents resolve`"}});
    }
    if (!open && was) {
      LogEvent(spdlog::level::info, "incident_resolved_resuming", {{"site_id", site}});
      more_waiting_ = true;
      next_fetch_ = now;
      next_rescue_ = now;
    }
  }
  // While any site is paused, look every second, so a resolved incident resumes it within a second.
  // A quiet worker (nothing held) looks as seldom as it looks for work: it would meet a bad key's
  // 401 itself on its next call.
  next_incident_check_ = now + (paused.empty() ? std::max(Millis(5000), RescueInterval()) : Millis(1000));
  PublishPaused(std::move(paused));
}

bool Coordinator::Quiet() const {
  return mailbox_.listening.load() && held_.empty() && held_deliveries_.empty() && pending_writes_.empty() &&
         pending_delivery_writes_.empty() && !more_waiting_ && !more_deliveries_ && !budget_more_;
}

Millis Coordinator::FetchInterval() const {
  return Millis(Quiet() ? std::max(config_.listen_fallback_ms, config_.fetch_interval_ms)
                        : config_.fetch_interval_ms);
}

Millis Coordinator::RescueInterval() const {
  return Millis(Quiet() ? std::max(config_.listen_fallback_ms, config_.rescue_interval_ms)
                        : config_.rescue_interval_ms);
}

bool Coordinator::Rescue() {
  const auto now = clock_.SteadyNow();
  if (now < next_rescue_) return false;
  next_rescue_ = now + RescueInterval();
  // Reading every held row costs the database about 0.2 ms per 1,000 rows held, per worker, per pass:
  // done only when a lease may have run out unnoticed, and every full interval for the rest. Ratings
  // and closes have a lease index (their renewals need not stay HOT): always rescued.
  const Millis full_interval(config_.rescue_full_interval_ms);
  const bool full = now >= next_full_sweep_;
  if (full) next_full_sweep_ = now + full_interval;
  const bool sweep = full || store_->LeasesSweepDue(full_interval);
  const int rescued =
      (sweep ? store_->JobsRescueExpiredSubmitting(1000) : 0) + deliveries_->DeliveriesRescueExpired(1000);
  if (rescued > 0) {
    metrics_.Rescued(rescued);
    LogEvent(spdlog::level::warn, "rescued_expired_submissions", {{"rows", std::to_string(rescued)}});
  }
  Claim(sweep ? Adopt::kAll : Adopt::kHandedBack);
  return true;
}

bool Coordinator::RoomToClaim() const {
  // A claim costs the database about as much as a few hundred rows in it: while the worker holds at
  // least a quarter of a batch, it waits until a quarter of a batch of room is free (with eight workers
  // sharing a queue, claims of a few dozen rows each as jobs finished cost more than the jobs).
  const int held = static_cast<int>(held_.size());
  const int room = config_.max_in_flight - held;
  const int worth = std::max(1, std::min(config_.claim_batch / 4, config_.max_in_flight / 4));
  return room > 0 && (room >= worth || held < worth);
}

void Coordinator::Claim(Adopt adopt) {
  if (mailbox_.paused || mailbox_.stopping) return;
  const int room = config_.max_in_flight - static_cast<int>(held_.size());
  if (room <= 0 || (adopt == Adopt::kNone && !RoomToClaim())) return;
  const int limit = std::min(room, config_.claim_batch);
  std::vector<ClaimedJob> jobs;
  if (adopt == Adopt::kAll) {
    jobs = store_->JobsAdoptPolling(config_.worker_id, config_.lease_ms, Scope(limit), limit);
  } else if (adopt == Adopt::kHandedBack) {
    jobs = store_->JobsAdoptHandedBack(config_.worker_id, config_.lease_ms, Scope(limit), limit);
  }
  int left = limit - static_cast<int>(jobs.size());
  // The circuit breaker: no new submissions while it is open (polls of adopted rows go on); one probe
  // while it is half-open.
  const BreakerState breaker = mailbox_.breaker_state.load();
  if (breaker != last_breaker_state_) {
    last_breaker_state_ = breaker;
    probe_claimed_ = false;
  }
  if (breaker == BreakerState::kOpen || (breaker == BreakerState::kHalfOpen && probe_claimed_)) {
    left = 0;
    more_waiting_ = false;
  } else if (breaker == BreakerState::kHalfOpen) {
    left = std::min(left, 1);
    probe_claimed_ = true;
  }
  if (left > 0) {
    auto claimed = store_->JobsClaimQueued(config_.worker_id, config_.lease_ms, Scope(left));
    more_waiting_ = static_cast<int>(claimed.size()) == left && breaker == BreakerState::kClosed;
    SpendCaps(claimed);
    for (auto& c : claimed) jobs.push_back(std::move(c));
  } else if (breaker == BreakerState::kClosed) {
    more_waiting_ = true;
  }
  if (jobs.empty()) return;
  for (const auto& j : jobs) held_.insert(j.id);
  mailbox_.PushJobs(std::move(jobs));
}

void Coordinator::CheckCancels() {
  const auto now = clock_.SteadyNow();
  if (!cancel_supported_ || held_.empty() || now < next_cancel_check_) return;
  next_cancel_check_ = now + Millis(1000);
  try {
    auto ids = store_->JobsCancelRequested(config_.worker_id);
    if (!ids.empty()) mailbox_.PushCancels(std::move(ids));
  } catch (const StoreError& e) {
    if (e.sqlstate() != "42703") throw;  // undefined column: the schema predates cancellation
    cancel_supported_ = false;
    LogEvent(spdlog::level::warn, "cancellation_unavailable",
             {{"detail", "uppzy.chat_jobs has no cancel_requested_at; run `uppzy-worker migrate`"}});
  }
}

void Coordinator::Heartbeat() {
  const auto now = clock_.SteadyNow();
  if (now < next_heartbeat_) return;
  next_heartbeat_ = now + Millis(std::max(config_.lease_ms / 3, 100));
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  store_->WorkersHeartbeat(config_.worker_id, host, static_cast<int>(getpid()), config_.site.site_id, Sites(),
                           config_.lease_ms, static_cast<int>(held_.size()),
                           std::string(ToString(mailbox_.breaker_state.load())), !heartbeat_written_);
  heartbeat_written_ = true;
}

Coordinator::Steady::time_point Coordinator::NextPassAt(Steady::time_point now) const {
  Steady::time_point until = now + Millis(config_.fetch_interval_ms);
  if (!store_) {
    // Disconnected: only the reconnect timer (and new writes or a stop) matter.
    return std::min(until, next_connect_);
  }
  until = std::min({until, next_fetch_, next_rescue_, next_incident_check_, next_heartbeat_});
  if (!retries_due_.empty()) until = std::min(until, *retries_due_.begin());
  if (!held_.empty() || !held_deliveries_.empty()) until = std::min(until, next_renew_);
  if (more_deliveries_ && !held_deliveries_.empty()) until = std::min(until, now + Millis(1));
  // Writes kept back because an app held their rows locked: try again soon.
  if (!pending_writes_.empty() || !pending_delivery_writes_.empty())
    until = std::min(until, now + Millis(250));
  if (!held_.empty() && cancel_supported_) until = std::min(until, next_cancel_check_);
  // The shared budget: calls waiting for tokens, or a claim its cap cut short, come back at the next grant.
  bool waiting = false;
  for (const auto& [site, n] : demand_) waiting = waiting || n > 0;
  if (budget_more_ || waiting) until = std::min(until, std::max(next_grant_, now));
  if (more_waiting_ && !held_.empty() && RoomToClaim()) {
    until = std::min(until, now + Millis(1));
  }
  return until;
}

void Coordinator::Run(std::atomic<bool>& all_done) {
  mailbox_.db_progress_at_ms = SteadyMs(clock_.SteadyNow());
  while (true) {
    const auto now = clock_.SteadyNow();
    // The mailbox waits on the real steady clock: wait as long as the clock source says is left.
    // Job writes linger (UPPZY_WRITE_LINGER_MS, at most a claim batch's worth): at 10,000 jobs/s that
    // turns ~80 writes a statement into ~250. The engine's writes carry outcomes that are seconds old
    // already; a claim, a NOTIFY or anything else is not delayed.
    mailbox_.WaitForDb(Steady::now() + (std::max(NextPassAt(now), now) - now),
                       Millis(config_.write_linger_ms), static_cast<size_t>(config_.claim_batch));
    if (!RunOnce(all_done)) break;
    if (error_pause_) {
      // A lasting error (not a lost connection): do not spin on it.
      error_pause_ = false;
      std::this_thread::sleep_for(Millis(200));
    }
  }
}

bool Coordinator::RunOnce(std::atomic<bool>& all_done) {
  const unsigned wake = mailbox_.TakeForDb(&pending_writes_, &pending_delivery_writes_, &pending_reports_);
  const bool woken = wake != 0;
  const auto now = clock_.SteadyNow();
  if (mailbox_.engine_done) {
    if (!stop_deadline_) stop_deadline_ = now + Millis(std::max(config_.shutdown_grace_ms, 1000));
    if (pending_writes_.empty() && pending_delivery_writes_.empty() && pending_reports_.empty()) {
      try {
        if (store_) store_->WorkersStopped(config_.worker_id);
      } catch (const StoreError&) {
      }
      return false;
    }
    if (now >= *stop_deadline_) {
      // Say why: an outage, or a database that answered but refused (e.g. kept timing out on locks).
      const std::string why = !store_ ? "the database stayed unreachable"
                                      : "the database kept refusing them (" + last_db_error_ + ")";
      LogEvent(spdlog::level::err, "writes_abandoned_at_exit",
               {{"count", std::to_string(pending_writes_.size() + pending_delivery_writes_.size())},
                {"detail", why + "; leases will hand these rows to another worker"}});
      try {
        if (store_) store_->WorkersStopped(config_.worker_id);
      } catch (const StoreError&) {
      }
      return false;
    }
  }
  if (!EnsureConnected()) return true;
  try {
    ProcessReports();
    ApplyWrites();
    ApplyDeliveryWrites();
    RenewLeases();
    Heartbeat();
    if (mailbox_.stopping) return true;
    CheckCancels();
    CheckIncident();
    const bool retry_due = !retries_due_.empty() && *retries_due_.begin() <= now;
    const bool timed_fetch = now >= next_fetch_ || retry_due;
    const bool fetch = woken || timed_fetch;
    if (retry_due) retries_due_.erase(retries_due_.begin(), retries_due_.upper_bound(now));
    const bool budget_claim = budget_more_ && now >= next_grant_;
    if (budget_claim) budget_more_ = false;
    Budget(fetch || now >= next_rescue_ || more_waiting_ || more_deliveries_ || budget_claim, woken);
    const bool rescued = Rescue();  // it claims too: the fetch below need not claim jobs again
    // A wake-up claims only the kinds its NOTIFY named (a new chat job needs no claim of ratings and
    // closes: two statements fewer per INSERT of the app); the timed fallback claims both.
    const bool fetch_jobs = timed_fetch || (wake & Mailbox::kWakeJobs) != 0;
    const bool fetch_deliveries = timed_fetch || (wake & Mailbox::kWakeDeliveries) != 0;
    if (fetch) next_fetch_ = now + FetchInterval();
    if (fetch && fetch_jobs) {
      if (!rescued) Claim(woken ? Adopt::kHandedBack : Adopt::kNone);
    } else if (more_waiting_ || budget_claim) {
      Claim(Adopt::kNone);
    }
    if ((fetch && fetch_deliveries) || more_deliveries_ || budget_claim) ClaimDeliveries();
    claim_caps_.clear();
    if (Quiet()) {
      // Quiet after this pass's claims (they found nothing): the next passes are the slow fallback,
      // except that the rescue pass comes back when another worker's lease runs out (it may have died).
      if (rescued) {
        next_rescue_ = now + RescueInterval();
        // A lease that ran out already is one this pass could not take (a paused site's, or a site we
        // have no key for): waking for it would only spin.
        const auto left = store_->LeasesNextExpiry(config_.worker_id);
        if (left && *left > Millis(0)) next_rescue_ = std::min(next_rescue_, now + *left + Millis(100));
      }
      if (fetch) next_fetch_ = now + FetchInterval();
    } else {
      // Work arrived or the listener went away: the slow fallback of a quiet worker no longer holds.
      next_fetch_ = std::min(next_fetch_, now + Millis(config_.fetch_interval_ms));
      next_rescue_ = std::min(next_rescue_, now + Millis(config_.rescue_interval_ms));
      next_incident_check_ = std::min(next_incident_check_, now + Millis(5000));
    }
    if (options_.until_empty && held_.empty() && held_deliveries_.empty() && pending_writes_.empty() &&
        now >= next_empty_check_) {
      next_empty_check_ = now + Millis(std::min(config_.fetch_interval_ms, 200));
      if (!store_->JobsAnyUnfinished() && !deliveries_->DeliveriesAnyUnfinished()) {
        all_done = true;
        mailbox_.stopping = true;
        mailbox_.WakeEngine();
      }
    }
    mailbox_.db_progress_at_ms = SteadyMs(clock_.SteadyNow());
  } catch (const StoreError& e) {
    last_db_error_ = e.what();
    if (e.transient()) {
      Disconnect(e);
    } else {
      LogEvent(spdlog::level::err, "database_error", {{"detail", e.what()}});
      error_pause_ = true;
    }
  }
  return true;
}

}  // namespace uppzy::runtime
