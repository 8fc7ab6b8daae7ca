// What a worker's coordinator needs of the database, as two interfaces: WorkerJobStore for chat jobs
// (claims, adoption, rescue, guarded batched writes, lease renewal, cancellations, incidents, the
// heartbeat) and WorkerDeliveryStore for ratings and session closes. Store (store.h) and DeliveryStore
// (delivery_store.h) are the PostgreSQL implementations; a test supplies fakes. The coordinator makes
// its stores through a WorkerStoreFactory, so reconnecting is making new ones.
//
// Thread-safety: an implementation need not be thread-safe; one thread (the coordinator's) uses it.
// Errors: every method may throw StoreError (store_error.h); transient() says whether reconnecting and
// trying again can help. No method keeps a transaction open after it returns.
//
// Fencing: every write after a claim carries its guard (holder, expected state, attempt). A write that
// misses it is refused, never applied over someone else's newer outcome.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "uppzy/delivery.h"
#include "uppzy/delivery_write.h"
#include "uppzy/job.h"
#include "uppzy/job_write.h"
#include "uppzy/store_error.h"

namespace uppzy {

// One site's part of a claim: at most `limit` rows of `site_id`.
struct SiteShare {
  std::string site_id;
  int limit = 0;
};

// Which work a claim may take: per site of the worker, at most that share's limit (a share with limit
// <= 0 claims nothing of its site). Rows whose site_id is NULL belong to the default site: a share whose
// site_id equals default_site covers both them and the rows with that site_id explicitly; without such
// a share NULL-site rows are not claimed. A site listed twice has the sum of its limits. Rows of sites
// not listed are never claimed, and neither are rows of a site paused in uppzy.sites (paused_at set).
// Plain value; thread-compatible.
struct ClaimScope {
  std::string default_site;  // the worker's UPPZY_SITE_ID
  std::vector<SiteShare> shares;
  // The most rows of all sites together, taken round the sites (JobsClaimQueued); 0: Total().
  int total = 0;

  // Every site of `sites` (the ones this worker holds keys for) may take up to `room` rows, and `room`
  // in all, taken round them: a site alone gets the whole room, sites with work share it evenly.
  static ClaimScope Fair(std::string default_site, const std::vector<std::string>& sites, int room) {
    ClaimScope s;
    s.default_site = std::move(default_site);
    for (const auto& site : sites) s.shares.push_back({site, room});
    s.total = room;
    return s;
  }

  // Only the default site (NULL-site rows and rows of `site`), at most `limit` rows.
  static ClaimScope DefaultOnly(std::string site, int limit) {
    ClaimScope s;
    s.shares.push_back({site, limit});
    s.default_site = std::move(site);
    return s;
  }
  // The sum of the positive limits: the most rows one claim takes.
  int Total() const {
    int n = 0;
    for (const auto& share : shares) n += share.limit > 0 ? share.limit : 0;
    return n;
  }
};

// What became of each job of a JobsApplyWrites call; every job is in exactly one list.
struct ApplyResult {
  std::vector<int64_t> applied;   // every write of the job was applied
  std::vector<int64_t> refused;   // a write missed the fencing guard (someone else holds the row now,
                                  // or it is gone): that write and the job's later ones were not applied
  std::vector<int64_t> deferred;  // another session holds the row locked (an app's FOR UPDATE or open
                                  // UPDATE): none of the job's writes from that one on were applied;
                                  // apply them again later, in order
};

// What became of each row of a DeliveriesApplyWrites call; every row is in exactly one list (see
// ApplyResult for the meaning of each).
struct DeliveryApplyResult {
  std::vector<DeliveryRef> applied;
  std::vector<DeliveryRef> refused;   // missed the fencing guard: someone else holds the row now
  std::vector<DeliveryRef> deferred;  // locked by another session: apply these writes again later
};

// One site's ask of the shared request budget (BudgetsGrant).
struct BudgetWant {
  std::string site_id;
  int calls = 0;  // requests to Uppzy this worker wants to send now (polls, submissions, deliveries)
  int slots = 0;  // of which new submissions (each takes an in-flight slot of max_in_flight)
};

// What the shared budget gave one site of a BudgetsGrant.
struct BudgetGrant {
  std::string site_id;
  bool budgeted = false;         // false: the site has no limit of any kind; send freely, ignore the rest
  int tokens = 0;                // requests this worker may send now (spend them within about a second)
  int slots = -1;                // new submissions it may claim now; -1: the site has no max_in_flight
  double rate_per_s = 0;         // the rate in force (configured x the 429-learned factor); 0 when none
  int64_t blocked_until_ms = 0;  // epoch ms until which a 429 blocks the site; 0: not blocked
};

class WorkerJobStore {
 public:
  virtual ~WorkerJobStore() = default;

  // queued/retrying rows with run_at <= now() -> submitting, attempts + 1, locked by `worker`.
  // Concurrent claimers never take the same row. Per site of `scope` (see ClaimScope), at most its
  // share's limit of that site's best rows (priority DESC, run_at, id), so one site's backlog never
  // takes another's share; at most scope.total (or Total()) rows in all, taken round the sites, in one
  // statement. Each ClaimedJob's site_id is its row's site (the scope's default site for a NULL site).
  virtual std::vector<ClaimedJob> JobsClaimQueued(const std::string& worker, int lease_ms,
                                                  const ClaimScope& scope) = 0;
  // polling rows whose lease ended (crashed or handed-back holders) -> held by `worker`, same attempt.
  // Only rows of the sites of `scope` (any limit) that are not paused; at most `limit` rows. Reads
  // every held row: see LeasesSweepDue.
  virtual std::vector<ClaimedJob> JobsAdoptPolling(const std::string& worker, int lease_ms,
                                                   const ClaimScope& scope, int limit) = 0;
  // The same for the rows a holder handed back only (shutdown, incident: locked_by NULL), found through
  // an index that is usually empty. The default adopts every expired row.
  virtual std::vector<ClaimedJob> JobsAdoptHandedBack(const std::string& worker, int lease_ms,
                                                      const ClaimScope& scope, int limit) {
    return JobsAdoptPolling(worker, lease_ms, scope, limit);
  }
  // Whether a lease may have run out without a hand-back, so that a rescue pass must read every held
  // row (JobsAdoptPolling, JobsRescueExpiredSubmitting): a worker (stopped or not) missed a heartbeat
  // within the last two leases and `window`, or a worker started within a lease and `window`. A lease
  // that runs out otherwise (a live worker that could not renew one row) waits for the next full pass,
  // every `window`. The default always says yes.
  virtual bool LeasesSweepDue(Millis window) {
    (void)window;
    return true;
  }
  // submitting rows whose lease ended -> retrying (or failed when no attempt is left), error
  // lease_expired. The POST may have reached Uppzy: this is the one duplicate-submission window.
  // Returns how many rows were rescued.
  virtual int JobsRescueExpiredSubmitting(int limit) = 0;
  // Applies writes in order, guarded; a job appearing twice is applied in two rounds. One transaction.
  // Never waits on a row lock another session holds: that job is deferred (see ApplyResult).
  virtual ApplyResult JobsApplyWrites(const std::string& worker, const std::vector<JobWrite>& writes) = 0;
  // Extends the lease of every listed row still held by `worker`; returns the ids renewed. A row another
  // session holds locked is skipped, not waited on (it is not in the result).
  virtual std::vector<int64_t> JobsRenewLeases(const std::string& worker, const std::vector<int64_t>& ids,
                                               int lease_ms) = 0;
  // True while any job is queued, retrying, submitting or polling.
  virtual bool JobsAnyUnfinished() = 0;
  // How long until the first lease of a row another worker holds (a job, rating or close) runs out:
  // negative if one has already, nullopt if no other worker holds a row. A quiet worker schedules its
  // next rescue pass by it, so a crashed worker's rows are taken over when their lease ends even while
  // the rest of the fleet is idle. The default knows nothing (a rescue pass every interval).
  virtual std::optional<Millis> LeasesNextExpiry(const std::string& worker) {
    (void)worker;
    return std::nullopt;
  }
  // Ids of rows held by `worker` whose cancellation was requested (cancel_requested_at set). Throws
  // StoreError with sqlstate 42703 on a schema without cancellation (before migration 0002).
  virtual std::vector<int64_t> JobsCancelRequested(const std::string& worker) = 0;

  // Opens the incident for this key unless one is open already. Returns {id, created}.
  virtual std::pair<int64_t, bool> IncidentsOpen(const std::string& kind, int http_status,
                                                 const std::string& detail, const std::string& site_id,
                                                 const std::string& fingerprint,
                                                 const std::string& worker) = 0;
  // The id of the open incident for this key fingerprint, if any.
  virtual std::optional<int64_t> IncidentsOpenFor(const std::string& fingerprint) = 0;
  // Of `fingerprints`, those with an open incident, in one look (the default asks one at a time).
  virtual std::vector<std::string> IncidentsOpenAmong(const std::vector<std::string>& fingerprints) {
    std::vector<std::string> open;
    for (const auto& f : fingerprints) {
      if (IncidentsOpenFor(f)) open.push_back(f);
    }
    return open;
  }

  // Upserts this worker's row in uppzy.workers (heartbeat), or marks it stopped. `site` is its default
  // site (UPPZY_SITE_ID), `sites` every site it holds a key for (uppzy.workers.sites, read by
  // uppzy.site_queues to tell whether a site is served). `starting`: the process's first heartbeat
  // (started_at is set again when the id was a dead process's).
  virtual void WorkersHeartbeat(const std::string& worker, const std::string& host, int pid,
                                const std::string& site, const std::vector<std::string>& sites, int lease_ms,
                                int jobs_in_flight, const std::string& breaker_state, bool starting) = 0;
  virtual void WorkersStopped(const std::string& worker) = 0;

  // The shared request budget (migrations/0010_site_budgets.sql). Takes tokens for every site of
  // `wants` in one statement on the database clock; returns one BudgetGrant per want, in any order.
  // `default_site` is the worker's UPPZY_SITE_ID (its NULL-site rows count against its max_in_flight).
  // The default (a store without budgets): every site unbudgeted.
  virtual std::vector<BudgetGrant> BudgetsGrant(const std::vector<BudgetWant>& wants,
                                                const std::string& default_site) {
    std::vector<BudgetGrant> out;
    for (const auto& w : wants) out.push_back(BudgetGrant{w.site_id});
    (void)default_site;
    return out;
  }
  // Uppzy answered 429 for `site_id`: blocks the site for every worker for `block_ms` and lowers its
  // rate (see the migration). `own_rate_per_s` is this worker's recent request rate to the site.
  virtual void BudgetsBlock(const std::string& site_id, int64_t block_ms, double own_rate_per_s) {
    (void)site_id, (void)block_ms, (void)own_rate_per_s;
  }
};

// Both delivery tables have the same bookkeeping, so every method serves both kinds: claims are per
// kind (so the caller can give each kind its share of capacity); writes, renewals and rescue take both
// kinds at once. Rows are named by DeliveryRef {kind, id}.
class WorkerDeliveryStore {
 public:
  virtual ~WorkerDeliveryStore() = default;

  // queued/retrying rows of `kind` with run_at <= now() -> sending, attempts + 1, locked by `worker`,
  // lease now + lease_ms. Concurrent claimers never take the same row. Per site of `scope` (see
  // ClaimScope; a row's site is its own site_id), at most its share's limit; oldest run_at first.
  // Returns at most `limit` rows in all (none when limit <= 0). Each row's site_id is its site (the
  // scope's default site for a NULL site).
  virtual std::vector<ClaimedDelivery> DeliveriesClaim(DeliveryKind kind, const std::string& worker,
                                                       int lease_ms, const ClaimScope& scope, int limit) = 0;
  // Applies the writes (both kinds may be mixed) in one transaction, guarded by id + state 'sending' +
  // attempts = expected_attempt + locked_by = worker; every write releases its row. A row appearing
  // twice is applied in two rounds, in order. A row another session holds locked is deferred.
  virtual DeliveryApplyResult DeliveriesApplyWrites(const std::string& worker,
                                                    const std::vector<DeliveryWrite>& writes) = 0;
  // Extends the lease of every listed row still `sending` and held by `worker`; returns those renewed.
  virtual std::vector<DeliveryRef> DeliveriesRenewLeases(const std::string& worker,
                                                         const std::vector<DeliveryRef>& held,
                                                         int lease_ms) = 0;
  // sending rows of both kinds whose lease ended -> retrying (or failed when no attempt is left), error
  // lease_expired. At most `limit` rows per table; returns how many were rescued.
  virtual int DeliveriesRescueExpired(int limit) = 0;
  // True while any rating or close is queued, retrying or sending.
  virtual bool DeliveriesAnyUnfinished() = 0;
};

// The coordinator's stores; `deliveries` may share nothing with `jobs` (the real ones are two
// connections).
struct WorkerStores {
  std::unique_ptr<WorkerJobStore> jobs;
  std::unique_ptr<WorkerDeliveryStore> deliveries;
};

// Makes (connects) both stores. Throws StoreError (transient when the database cannot be reached).
using WorkerStoreFactory = std::function<WorkerStores()>;

}  // namespace uppzy
