// The PostgreSQL store: every SQL statement uppzy-worker runs, as named methods.
//
// A Store owns one connection and is NOT thread-safe: give each thread its own. No method keeps a
// transaction open after it returns, so no transaction ever spans an HTTP call. Every state change
// after a claim is guarded by holder, state and attempt (fencing): a write that misses the guard is
// refused, never applied over someone else's newer outcome.
//
// Every connection sets lock_timeout (2 s): no statement waits longer than that on a lock an app
// holds; the hot statements (claims, writes, lease renewals, rescue) skip locked rows instead.
//
// Store is the PostgreSQL WorkerJobStore (worker_store.h, where those methods are documented), plus
// what operators and tests need besides: migrations, enqueue, the incident list.
//
// Errors: every method throws StoreError (store_error.h). StoreError::transient() is true when the cause is
// the environment (connection lost, server restarting, serialization failure, deadlock): reconnecting and
// trying again can succeed. Other errors (constraint violations, bad SQL) are not transient.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uppzy/job.h"
#include "uppzy/job_write.h"
#include "uppzy/store_error.h"
#include "uppzy/worker_store.h"

namespace uppzy {

// Returns "" when libpq can parse `database_url` (a postgresql:// URI or key=value pairs), else libpq's
// reason. A URL that cannot be parsed never connects, so configuration refuses it at start-up instead
// of retrying it as an outage. Does not connect; never throws.
std::string CheckDatabaseUrl(const std::string& database_url);

// A job as the app enqueues it (the same INSERT a web app runs).
struct NewJob {
  std::string session_id;
  std::string message;
  std::string response_language = "en";
  std::string job_key;  // empty: none
  std::optional<int> max_attempts;
  int priority = 0;
  std::string metadata_json = "{}";
};

struct EnqueueResult {
  int64_t id = 0;
  bool created = true;  // false: a job with this job_key already existed (ON CONFLICT DO NOTHING)
};

struct Incident {
  int64_t id = 0;
  std::string kind;
  int http_status = 0;
  std::string detail;
  std::string api_key_fingerprint;
  std::string opened_at;
  std::string resolved_at;  // empty while open
};

class Store final : public WorkerJobStore {
 public:
  // Connects at once. Throws StoreError (transient) when the database cannot be reached.
  explicit Store(const std::string& database_url);
  ~Store() override;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Applies every embedded migration not yet recorded in uppzy.schema_migrations, each in its own
  // transaction, under an advisory lock. Returns the names applied (empty when up to date).
  std::vector<std::string> Migrate();

  // WorkerJobStore.
  std::vector<ClaimedJob> JobsClaimQueued(const std::string& worker, int lease_ms,
                                          const ClaimScope& scope) override;
  std::vector<ClaimedJob> JobsAdoptPolling(const std::string& worker, int lease_ms, const ClaimScope& scope,
                                           int limit) override;
  std::vector<ClaimedJob> JobsAdoptHandedBack(const std::string& worker, int lease_ms,
                                              const ClaimScope& scope, int limit) override;
  bool LeasesSweepDue(Millis window) override;
  int JobsRescueExpiredSubmitting(int limit) override;
  ApplyResult JobsApplyWrites(const std::string& worker, const std::vector<JobWrite>& writes) override;
  std::vector<int64_t> JobsRenewLeases(const std::string& worker, const std::vector<int64_t>& ids,
                                       int lease_ms) override;
  bool JobsAnyUnfinished() override;
  std::vector<int64_t> JobsCancelRequested(const std::string& worker) override;
  std::pair<int64_t, bool> IncidentsOpen(const std::string& kind, int http_status, const std::string& detail,
                                         const std::string& site_id, const std::string& fingerprint,
                                         const std::string& worker) override;
  std::optional<int64_t> IncidentsOpenFor(const std::string& fingerprint) override;
  std::vector<std::string> IncidentsOpenAmong(const std::vector<std::string>& fingerprints) override;
  std::optional<Millis> LeasesNextExpiry(const std::string& worker) override;
  std::vector<BudgetGrant> BudgetsGrant(const std::vector<BudgetWant>& wants,
                                        const std::string& default_site) override;
  void BudgetsBlock(const std::string& site_id, int64_t block_ms, double own_rate_per_s) override;
  void WorkersHeartbeat(const std::string& worker, const std::string& host, int pid, const std::string& site,
                        const std::vector<std::string>& sites, int lease_ms, int jobs_in_flight,
                        const std::string& breaker_state, bool starting) override;
  void WorkersStopped(const std::string& worker) override;

  // The single-site forms (tests, tools): only rows whose site_id is NULL, at most `limit`; a
  // ClaimedJob's site_id is then "".
  std::vector<ClaimedJob> JobsClaimQueued(const std::string& worker, int lease_ms, int limit);
  std::vector<ClaimedJob> JobsAdoptPolling(const std::string& worker, int lease_ms, int limit);

  EnqueueResult JobsEnqueue(const NewJob& job);

  std::vector<Incident> IncidentsList(bool open_only);
  // Returns false when no open incident has this id.
  bool IncidentsResolve(int64_t id);
  int IncidentsResolveAll();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Blocks until a NOTIFY arrives on `channel` or `timeout_ms` passes. One connection; NOT thread-safe.
// Throws StoreError (transient) when the connection is lost; make a new Listener then.
class Listener {
 public:
  Listener(const std::string& database_url, const std::string& channel);
  ~Listener();
  // Returns the number of notifications received (0 on timeout). With `payloads`, appends their
  // payloads (at most kMaxPayloads per call; the count still counts every one).
  int Wait(int timeout_ms, std::vector<std::string>* payloads = nullptr);
  static constexpr size_t kMaxPayloads = 64;
  // Round trip on the connection: a silently dead connection (no RST ever arrived) throws here.
  void Ping();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
