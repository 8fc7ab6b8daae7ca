#include "uppzy/store.h"

#include <libpq-fe.h>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include <pqxx/pqxx>
#include <set>
#include <unordered_set>

#include "store/embedded_migrations.h"
#include "store/queries.h"
#include "store/queries_budget.h"
#include "store/sql_values.h"
#include "store/translate.h"

namespace uppzy {
namespace {

using nlohmann::json;

using store::IdArray;
using store::Translate;
// src/store/translate.h

// A batch of job writes as the 21 typed arrays of UPPZY_APPLY_BATCH, in its column order.
class JobWriteColumns {
 public:
  void Add(const JobWrite& w) {
    c_[0].Int(w.id);
    c_[1].Text(ToString(w.expected_state));
    c_[2].Int(w.expected_attempt);
    c_[3].Text(ToString(w.new_state));
    c_[4].Int(w.attempts_delta);
    c_[5].Bool(w.keep_lock);
    c_[6].Bool(w.expire_lease);
    c_[7].Bool(w.clear_request);
    c_[8].OptText(w.request_id);
    c_[9].Ms(w.submitted_at);
    c_[10].Ms(w.poll_deadline);
    c_[11].OptInt(w.polls);
    c_[12].Ms(w.run_at);
    c_[13].OptText(w.answer);
    // The engine stores the completed body's other fields as serialized JSON; anything that is not
    // JSON (it never should be) is stored as {} rather than failing the batch.
    if (!w.result_json) {
      c_[14].Null();
    } else {
      c_[14].Text(json::accept(*w.result_json) ? std::string_view(*w.result_json) : std::string_view("{}"));
    }
    store::AddErrorColumns(w.error, c_[15], c_[16], c_[17], c_[18]);
    c_[19].OptInt(w.answer_ready_after_ms);
    c_[20].OptInt(w.answer_seen_after_ms);
    ++size_;
  }
  size_t size() const { return size_; }
  // The statement's parameters: the worker, then the columns. The builder is empty afterwards.
  pqxx::result Exec(pqxx::transaction_base& tx, const char* statement, const std::string& worker) {
    size_ = 0;
    return tx.exec_prepared(statement, worker, c_[0].Take(), c_[1].Take(), c_[2].Take(), c_[3].Take(),
                            c_[4].Take(), c_[5].Take(), c_[6].Take(), c_[7].Take(), c_[8].Take(),
                            c_[9].Take(), c_[10].Take(), c_[11].Take(), c_[12].Take(), c_[13].Take(),
                            c_[14].Take(), c_[15].Take(), c_[16].Take(), c_[17].Take(), c_[18].Take(),
                            c_[19].Take(), c_[20].Take());
  }

 private:
  store::ArrayColumn c_[21];
  size_t size_ = 0;
};

TimePoint FromMs(long long ms) { return TimePoint(std::chrono::milliseconds(ms)); }

std::vector<ClaimedJob> ReadClaimed(const pqxx::result& r) {
  std::vector<ClaimedJob> out;
  out.reserve(r.size());
  for (const auto& row : r) {
    ClaimedJob c;
    c.id = row[0].as<int64_t>();
    c.job_key = row[1].as<std::string>();
    c.session_id = row[2].as<std::string>();
    c.message = row[3].as<std::string>();
    c.response_language = row[4].as<std::string>();
    c.state = ParseJobState(row[5].as<std::string>()).value_or(JobState::kSubmitting);
    c.attempt = row[6].as<int>();
    c.max_attempts = row[7].as<int>();
    c.request_id = row[8].as<std::string>();
    c.submitted_at = FromMs(row[9].as<long long>());
    c.poll_deadline = FromMs(row[10].as<long long>());
    c.polls = row[11].as<int>();
    c.created_at = FromMs(row[12].as<long long>());
    c.site_id = row[13].as<std::string>();
    out.push_back(std::move(c));
  }
  return out;
}

int VersionOf(const std::string& name) {
  int v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') break;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

std::string CheckDatabaseUrl(const std::string& database_url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(database_url.c_str(), &error);
  std::string problem;
  if (options == nullptr) {
    problem = error != nullptr ? error : "cannot be parsed";
    while (!problem.empty() && (problem.back() == '\n' || problem.back() == ' ')) problem.pop_back();
  }
  if (error != nullptr) PQfreemem(error);
  if (options != nullptr) PQconninfoFree(options);
  return problem;
}

struct Store::Impl {
  explicit Impl(const std::string& url) : conn(url) {
    pqxx::nontransaction(conn).exec(store::sql::kSessionLockTimeout);
    conn.prepare("claim_queued", store::sql::kJobsClaimQueued);
    conn.prepare("adopt_polling", store::sql::kJobsAdoptPolling);
    conn.prepare("adopt_handed_back", store::sql::kJobsAdoptHandedBack);
    conn.prepare("rescue_submitting", store::sql::kJobsRescueExpiredSubmitting);
    conn.prepare("apply_writes_fast", store::sql::kJobsApplyWritesFast);
    conn.prepare("apply_writes_skip_locked", store::sql::kJobsApplyWritesSkipLocked);
    conn.prepare("renew_leases", store::sql::kJobsRenewLeases);
  }
  pqxx::connection conn;
  // Jobs whose last write was deferred (an app held the row): their next batch goes straight to the
  // skip-locked form instead of waiting out the fast form's lock_timeout again.
  std::unordered_set<int64_t> deferred;
  // budgets_grant is prepared at its first use: a database not yet migrated to 0010 still connects.
  bool budgets_prepared = false;
};

Store::Store(const std::string& database_url) {
  Translate([&] {
    impl_ = std::make_unique<Impl>(database_url);
    return 0;
  });
}

Store::~Store() = default;

std::vector<std::string> Store::Migrate() {
  return Translate([&] {
    std::vector<std::string> applied_now;
    pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsLock);
    try {
      {
        pqxx::work tx(impl_->conn);
        tx.exec(store::sql::kMigrationsBootstrap);
        tx.commit();
      }
      std::set<int> done;
      {
        pqxx::nontransaction tx(impl_->conn);
        for (const auto& row : tx.exec(store::sql::kMigrationsApplied)) done.insert(row[0].as<int>());
      }
      for (const auto& m : store::EmbeddedMigrations()) {
        const int version = VersionOf(m.name);
        if (version == 0 || done.count(version)) continue;
        pqxx::work tx(impl_->conn);
        tx.exec(m.sql);
        tx.exec_params(store::sql::kMigrationsRecord, version, m.name);
        tx.commit();
        applied_now.push_back(m.name);
      }
    } catch (...) {
      try {
        pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsUnlock);
      } catch (...) {
      }
      throw;
    }
    pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsUnlock);
    return applied_now;
  });
}

std::vector<ClaimedJob> Store::JobsClaimQueued(const std::string& worker, int lease_ms,
                                               const ClaimScope& scope) {
  return Translate([&] {
    if (scope.Total() <= 0) return std::vector<ClaimedJob>();
    const auto arrays = store::ToArrays(scope);
    // One statement, so its own transaction (autocommit): one round trip, no BEGIN and COMMIT.
    pqxx::nontransaction tx(impl_->conn);
    auto r =
        tx.exec_prepared("claim_queued", worker, static_cast<long long>(lease_ms), arrays.sites,
                         arrays.limits, scope.default_site, scope.total > 0 ? scope.total : scope.Total());
    return ReadClaimed(r);
  });
}

std::vector<ClaimedJob> Store::JobsClaimQueued(const std::string& worker, int lease_ms, int limit) {
  return JobsClaimQueued(worker, lease_ms, ClaimScope::DefaultOnly("", limit));
}

namespace {
std::vector<ClaimedJob> Adopt(pqxx::connection& conn, const char* statement, const std::string& worker,
                              int lease_ms, const ClaimScope& scope, int limit) {
  return Translate([&] {
    if (limit <= 0 || scope.shares.empty()) return std::vector<ClaimedJob>();
    pqxx::nontransaction tx(conn);  // one statement: autocommit
    auto r = tx.exec_prepared(statement, worker, static_cast<long long>(lease_ms),
                              store::ToArrays(scope).sites, limit, scope.default_site);
    return ReadClaimed(r);
  });
}
}  // namespace

std::vector<ClaimedJob> Store::JobsAdoptPolling(const std::string& worker, int lease_ms,
                                                const ClaimScope& scope, int limit) {
  return Adopt(impl_->conn, "adopt_polling", worker, lease_ms, scope, limit);
}

std::vector<ClaimedJob> Store::JobsAdoptHandedBack(const std::string& worker, int lease_ms,
                                                   const ClaimScope& scope, int limit) {
  return Adopt(impl_->conn, "adopt_handed_back", worker, lease_ms, scope, limit);
}

bool Store::LeasesSweepDue(Millis window) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    return tx.exec_params1(store::sql::kLeasesSweepDue, static_cast<long long>(window.count()))[0].as<bool>();
  });
}

std::vector<ClaimedJob> Store::JobsAdoptPolling(const std::string& worker, int lease_ms, int limit) {
  return JobsAdoptPolling(worker, lease_ms, ClaimScope::DefaultOnly("", limit), limit);
}

int Store::JobsRescueExpiredSubmitting(int limit) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);  // one statement: autocommit
    return static_cast<int>(tx.exec_prepared("rescue_submitting", limit).size());
  });
}

ApplyResult Store::JobsApplyWrites(const std::string& worker, const std::vector<JobWrite>& writes) {
  return Translate([&] {
    ApplyResult result;
    if (writes.empty()) return result;
    // A job may have several writes queued (accepted, then completed): apply them in rounds so each
    // round touches a row at most once, in the order they were made. A job leaves the rounds at its
    // first write that is refused (fenced) or deferred (the row is locked by another session).
    enum class Fate { kApplied, kRefused, kDeferred };
    std::map<int64_t, std::vector<const JobWrite*>> by_job;
    std::vector<int64_t> order;  // jobs in the order of their first write
    for (const auto& w : writes) {
      auto& queue = by_job[w.id];
      if (queue.empty()) order.push_back(w.id);
      queue.push_back(&w);
    }
    std::map<int64_t, Fate> fate;
    size_t rounds = 0;
    for (const auto& [id, queue] : by_job) rounds = std::max(rounds, queue.size());
    // Polling rows handed back (shutdown, incident): wake the other workers so they adopt them now.
    const bool hand_back =
        std::any_of(writes.begin(), writes.end(), [](const JobWrite& w) { return w.expire_lease; });
    // One attempt at every round. The fast form is one plain guarded UPDATE per round under a 100 ms
    // lock_timeout it sets itself; it costs nothing extra when no app holds a row. The skip-locked form
    // locks first (a row lock per write) and skips rows others hold. One statement (one round, nothing
    // to notify) runs on its own, autocommit: one round trip instead of BEGIN, UPDATE, COMMIT. Several
    // share a transaction.
    auto attempt = [&](bool skip_locked) {
      for (int64_t id : order) fate[id] = Fate::kApplied;
      std::unique_ptr<pqxx::transaction_base> tx_owner;
      if (rounds == 1 && !hand_back) {
        tx_owner = std::make_unique<pqxx::nontransaction>(impl_->conn);
      } else {
        tx_owner = std::make_unique<pqxx::work>(impl_->conn);
      }
      pqxx::transaction_base& tx = *tx_owner;
      for (size_t round = 0;; ++round) {
        JobWriteColumns batch;
        std::vector<int64_t> ids;
        for (int64_t id : order) {
          const auto& queue = by_job[id];
          if (round < queue.size() && fate[id] == Fate::kApplied) {
            batch.Add(*queue[round]);
            ids.push_back(id);
          }
        }
        if (batch.size() == 0) break;
        if (skip_locked) {
          for (const auto& row : batch.Exec(tx, "apply_writes_skip_locked", worker)) {
            const auto id = row[0].as<int64_t>();
            const bool exists = row[1].as<bool>();
            const bool locked = row[2].as<bool>();
            if (!row[3].as<bool>()) fate[id] = exists && !locked ? Fate::kDeferred : Fate::kRefused;
          }
        } else {
          std::unordered_set<int64_t> applied;
          for (const auto& row : batch.Exec(tx, "apply_writes_fast", worker)) {
            applied.insert(row[0].as<int64_t>());
          }
          for (int64_t id : ids) {
            if (!applied.count(id)) fate[id] = Fate::kRefused;
          }
        }
      }
      if (hand_back) tx.exec(store::sql::kNotifyHandBack);
      tx.commit();
    };
    const bool known_locked =
        std::any_of(order.begin(), order.end(), [&](int64_t id) { return impl_->deferred.count(id) > 0; });
    bool done = false;
    if (!known_locked) {
      try {
        attempt(/*skip_locked=*/false);
        done = true;
      } catch (const pqxx::sql_error& e) {
        if (e.sqlstate() != "55P03") throw;  // another session holds one of the rows: skip it instead
      }
    }
    if (!done) attempt(/*skip_locked=*/true);
    // A job counts as applied only if every one of its writes was.
    for (int64_t id : order) {
      impl_->deferred.erase(id);
      switch (fate[id]) {
        case Fate::kApplied:
          result.applied.push_back(id);
          break;
        case Fate::kRefused:
          result.refused.push_back(id);
          break;
        case Fate::kDeferred:
          result.deferred.push_back(id);
          impl_->deferred.insert(id);
          break;
      }
    }
    return result;
  });
}

std::vector<int64_t> Store::JobsRenewLeases(const std::string& worker, const std::vector<int64_t>& ids,
                                            int lease_ms) {
  return Translate([&] {
    std::vector<int64_t> renewed;
    if (ids.empty()) return renewed;
    pqxx::nontransaction tx(impl_->conn);  // one statement: autocommit
    for (const auto& row :
         tx.exec_prepared("renew_leases", worker, IdArray(ids), static_cast<long long>(lease_ms))) {
      renewed.push_back(row[0].as<int64_t>());
    }
    return renewed;
  });
}

bool Store::JobsAnyUnfinished() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    return tx.exec(store::sql::kJobsAnyUnfinished)[0][0].as<bool>();
  });
}

std::vector<int64_t> Store::JobsCancelRequested(const std::string& worker) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<int64_t> ids;
    for (const auto& row : tx.exec_params(store::sql::kJobsCancelRequested, worker))
      ids.push_back(row[0].as<int64_t>());
    return ids;
  });
}

void Store::WorkersHeartbeat(const std::string& worker, const std::string& host, int pid,
                             const std::string& site, const std::vector<std::string>& sites, int lease_ms,
                             int jobs_in_flight, const std::string& breaker_state, bool starting) {
  Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    tx.exec_params(store::sql::kWorkersHeartbeat, worker, host, pid, std::string(UPPZY_VERSION), site,
                   lease_ms, jobs_in_flight, breaker_state, store::TextArray(sites), starting);
    return 0;
  });
}

void Store::WorkersStopped(const std::string& worker) {
  Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    tx.exec_params(store::sql::kWorkersStopped, worker);
    return 0;
  });
}

EnqueueResult Store::JobsEnqueue(const NewJob& job) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r =
        tx.exec_params(store::sql::kJobsEnqueue, job.job_key, job.session_id, job.message,
                       job.response_language, job.max_attempts.value_or(0), job.priority, job.metadata_json);
    EnqueueResult out;
    if (r.empty()) {
      out.created = false;
      out.id = tx.exec_params(store::sql::kJobsIdByKey, job.job_key)[0][0].as<int64_t>();
    } else {
      out.id = r[0][0].as<int64_t>();
    }
    tx.commit();
    return out;
  });
}

std::pair<int64_t, bool> Store::IncidentsOpen(const std::string& kind, int http_status,
                                              const std::string& detail, const std::string& site_id,
                                              const std::string& fingerprint, const std::string& worker) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r =
        tx.exec_params(store::sql::kIncidentsOpen, kind, http_status, detail, site_id, fingerprint, worker);
    std::pair<int64_t, bool> out{0, !r.empty()};
    if (!r.empty()) {
      out.first = r[0][0].as<int64_t>();
    } else {
      auto open = tx.exec_params(store::sql::kIncidentsOpenFor, fingerprint);
      if (!open.empty()) out.first = open[0][0].as<int64_t>();
    }
    tx.commit();
    return out;
  });
}

std::optional<int64_t> Store::IncidentsOpenFor(const std::string& fingerprint) {
  return Translate([&]() -> std::optional<int64_t> {
    pqxx::nontransaction tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kIncidentsOpenFor, fingerprint);
    if (r.empty()) return std::nullopt;
    return r[0][0].as<int64_t>();
  });
}

std::vector<BudgetGrant> Store::BudgetsGrant(const std::vector<BudgetWant>& wants,
                                             const std::string& default_site) {
  if (wants.empty()) return {};
  return Translate([&] {
    std::vector<std::string> sites;
    std::vector<int> calls, slots;
    for (const auto& w : wants) {
      sites.push_back(w.site_id);
      calls.push_back(w.calls);
      slots.push_back(w.slots);
    }
    if (!impl_->budgets_prepared) {
      impl_->conn.prepare("budgets_grant", store::sql::kBudgetsGrant);
      impl_->budgets_prepared = true;
    }
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_prepared("budgets_grant", store::TextArray(sites), store::IntArray(calls),
                              store::IntArray(slots), default_site);
    tx.commit();
    std::vector<BudgetGrant> out;
    for (const auto& row : r) {
      BudgetGrant g;
      g.site_id = row[0].as<std::string>();
      g.budgeted = row[1].as<bool>();
      g.tokens = row[2].as<int>();
      g.slots = row[3].as<int>();
      g.rate_per_s = row[4].as<double>();
      g.blocked_until_ms = row[5].as<int64_t>();
      out.push_back(std::move(g));
    }
    return out;
  });
}

void Store::BudgetsBlock(const std::string& site_id, int64_t block_ms, double own_rate_per_s) {
  Translate([&] {
    pqxx::work tx(impl_->conn);
    tx.exec_params(store::sql::kBudgetsBlock, site_id, block_ms, own_rate_per_s);
    tx.commit();
    return 0;
  });
}

std::optional<Millis> Store::LeasesNextExpiry(const std::string& worker) {
  return Translate([&]() -> std::optional<Millis> {
    pqxx::nontransaction tx(impl_->conn);
    const auto r = tx.exec_params(store::sql::kLeasesNextExpiry, worker);
    if (r.empty() || r[0][0].is_null()) return std::nullopt;
    return Millis(r[0][0].as<long long>());
  });
}

std::vector<std::string> Store::IncidentsOpenAmong(const std::vector<std::string>& fingerprints) {
  if (fingerprints.empty()) return {};
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<std::string> open;
    for (const auto& row : tx.exec_params(store::sql::kIncidentsOpenAmong, store::TextArray(fingerprints)))
      open.push_back(row[0].as<std::string>());
    return open;
  });
}

std::vector<Incident> Store::IncidentsList(bool open_only) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<Incident> out;
    for (const auto& row : tx.exec_params(store::sql::kIncidentsList, open_only)) {
      Incident i;
      i.id = row[0].as<int64_t>();
      i.kind = row[1].as<std::string>();
      i.http_status = row[2].as<int>();
      i.detail = row[3].as<std::string>();
      i.api_key_fingerprint = row[4].as<std::string>();
      i.opened_at = row[5].as<std::string>();
      i.resolved_at = row[6].as<std::string>();
      out.push_back(std::move(i));
    }
    return out;
  });
}

bool Store::IncidentsResolve(int64_t id) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kIncidentsResolve, id);
    tx.commit();
    return !r.empty();
  });
}

int Store::IncidentsResolveAll() {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r = tx.exec(store::sql::kIncidentsResolveAll);
    tx.commit();
    return static_cast<int>(r.size());
  });
}

struct Listener::Impl {
  struct Receiver : pqxx::notification_receiver {
    Receiver(pqxx::connection_base& c, const std::string& channel)
        : pqxx::notification_receiver(c, channel) {}
    void operator()(const std::string& payload, int) override {
      ++count;
      if (payloads.size() < Listener::kMaxPayloads) payloads.push_back(payload);
    }
    int count = 0;
    std::vector<std::string> payloads;
  };
  Impl(const std::string& url, const std::string& channel) : conn(url), receiver(conn, channel) {}
  pqxx::connection conn;
  Receiver receiver;
};

Listener::Listener(const std::string& database_url, const std::string& channel) {
  Translate([&] {
    impl_ = std::make_unique<Impl>(database_url, channel);
    // Make sure LISTEN is in effect before returning (the receiver issues it lazily otherwise).
    impl_->conn.get_notifs();
    return 0;
  });
}

Listener::~Listener() = default;

void Listener::Ping() {
  Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    tx.exec("SELECT 1");
    return 0;
  });
}

int Listener::Wait(int timeout_ms, std::vector<std::string>* payloads) {
  return Translate([&] {
    impl_->receiver.count = 0;
    impl_->receiver.payloads.clear();
    int n = impl_->conn.get_notifs();
    if (n == 0) {
      impl_->conn.await_notification(timeout_ms / 1000, (timeout_ms % 1000) * 1000);
      n = impl_->conn.get_notifs();
      if (!impl_->conn.is_open()) throw StoreError("listen connection lost", true);
    }
    if (payloads != nullptr) {
      for (auto& p : impl_->receiver.payloads) payloads->push_back(std::move(p));
    }
    return impl_->receiver.count;
  });
}

}  // namespace uppzy
