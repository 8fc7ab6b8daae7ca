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
// Errors: every method throws StoreError. StoreError::transient() is true when the cause is the
// environment (connection lost, server restarting, serialization failure, deadlock): reconnecting and
// trying again can succeed. Other errors (constraint violations, bad SQL) are not transient.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "uppzy/job.h"
#include "uppzy/job_write.h"

namespace uppzy {

class StoreError : public std::runtime_error {
 public:
  StoreError(const std::string& what, bool transient, std::string sqlstate = {})
      : std::runtime_error(what), transient_(transient), sqlstate_(std::move(sqlstate)) {}
  bool transient() const { return transient_; }
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  bool transient_;
  std::string sqlstate_;
};

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

// What became of each job of a JobsApplyWrites call; every job is in exactly one list.
struct ApplyResult {
  std::vector<int64_t> applied;   // every write of the job was applied
  std::vector<int64_t> refused;   // a write missed the fencing guard (someone else holds the row now,
                                  // or it is gone): that write and the job's later ones were not applied
  std::vector<int64_t> deferred;  // another session holds the row locked (an app's FOR UPDATE or open
                                  // UPDATE): none of the job's writes from that one on were applied;
                                  // apply them again later, in order
};

class Store {
 public:
  // Connects at once. Throws StoreError (transient) when the database cannot be reached.
  explicit Store(const std::string& database_url);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Applies every embedded migration not yet recorded in uppzy.schema_migrations, each in its own
  // transaction, under an advisory lock. Returns the names applied (empty when up to date).
  std::vector<std::string> Migrate();

  // queued/retrying rows with run_at <= now() -> submitting, attempts + 1, locked by `worker`.
  // FOR UPDATE SKIP LOCKED: concurrent claimers never take the same row. Best first.
  std::vector<ClaimedJob> JobsClaimQueued(const std::string& worker, int lease_ms, int limit);
  // polling rows whose lease ended (crashed or handed-back holders) -> held by `worker`, same attempt.
  std::vector<ClaimedJob> JobsAdoptPolling(const std::string& worker, int lease_ms, int limit);
  // submitting rows whose lease ended -> retrying (or failed when no attempt is left), error
  // lease_expired. The POST may have reached Uppzy: this is the one duplicate-submission window.
  int JobsRescueExpiredSubmitting(int limit);
  // Applies writes in order, guarded; a job appearing twice is applied in two rounds. One transaction.
  // Never waits on a row lock another session holds: that job is deferred (see ApplyResult).
  ApplyResult JobsApplyWrites(const std::string& worker, const std::vector<JobWrite>& writes);
  // Extends the lease of every listed row still held by `worker`; returns the ids renewed. A row another
  // session holds locked is skipped, not waited on (it is not in the result).
  std::vector<int64_t> JobsRenewLeases(const std::string& worker, const std::vector<int64_t>& ids,
                                       int lease_ms);
  // True while any job is queued, retrying, submitting or polling.
  bool JobsAnyUnfinished();
  // Ids of rows held by `worker` whose cancellation was requested (cancel_requested_at set).
  std::vector<int64_t> JobsCancelRequested(const std::string& worker);
  EnqueueResult JobsEnqueue(const NewJob& job);

  // Opens the incident for this key unless one is open already. Returns {id, created}.
  std::pair<int64_t, bool> IncidentsOpen(const std::string& kind, int http_status, const std::string& detail,
                                         const std::string& site_id, const std::string& fingerprint,
                                         const std::string& worker);
  std::optional<int64_t> IncidentsOpenFor(const std::string& fingerprint);
  std::vector<Incident> IncidentsList(bool open_only);
  // Returns false when no open incident has this id.
  bool IncidentsResolve(int64_t id);
  int IncidentsResolveAll();

  // Upserts this worker's row in uppzy.workers (heartbeat), or marks it stopped.
  void WorkersHeartbeat(const std::string& worker, const std::string& host, int pid, const std::string& site,
                        int lease_ms, int jobs_in_flight, const std::string& breaker_state);
  void WorkersStopped(const std::string& worker);

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
  // Returns the number of notifications received (0 on timeout).
  int Wait(int timeout_ms);
  // Round trip on the connection: a silently dead connection (no RST ever arrived) throws here.
  void Ping();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
