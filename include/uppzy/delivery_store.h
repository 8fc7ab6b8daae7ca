// The PostgreSQL store for deliveries: every SQL statement on uppzy.chat_feedback and
// uppzy.session_closes, as named methods that mirror the jobs' (store.h).
//
// A DeliveryStore owns one connection and is NOT thread-safe: give each thread its own. No method keeps
// a transaction open after it returns, so no transaction spans an HTTP call. Every state change after a
// claim is guarded by holder, state (`sending`) and attempt: a write that misses the guard is refused,
// never applied over someone else's newer outcome.
//
// Both tables have the same bookkeeping columns, so every method serves both kinds: claims are per kind
// (so the caller can give each kind its share of capacity); writes, renewals and rescue take both kinds
// at once. Ids are per table, so rows are named by DeliveryRef {kind, id}.
//
// DeliveryStore is the PostgreSQL WorkerDeliveryStore (worker_store.h), plus the app-facing enqueues.
//
// Errors: every method throws StoreError (store.h); transient() says whether reconnecting can help.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uppzy/delivery.h"
#include "uppzy/delivery_write.h"
#include "uppzy/store.h"
#include "uppzy/worker_store.h"

namespace uppzy {

class DeliveryStore final : public WorkerDeliveryStore {
 public:
  // Connects at once. Throws StoreError (transient) when the database cannot be reached.
  explicit DeliveryStore(const std::string& database_url);
  ~DeliveryStore() override;
  DeliveryStore(const DeliveryStore&) = delete;
  DeliveryStore& operator=(const DeliveryStore&) = delete;

  // queued/retrying rows of `kind` with run_at <= now() -> sending, attempts + 1, locked by `worker`,
  // lease now + lease_ms. FOR UPDATE SKIP LOCKED: concurrent claimers never take the same row. Per site
  // of `scope` at most its share's limit (see ClaimScope); oldest run_at first. Returns at most `limit`
  // rows in all (none when limit <= 0).
  std::vector<ClaimedDelivery> DeliveriesClaim(DeliveryKind kind, const std::string& worker, int lease_ms,
                                               const ClaimScope& scope, int limit) override;
  // The single-site form (tests, tools): only rows whose site_id is NULL, at most `limit`; a
  // ClaimedDelivery's site_id is then "".
  std::vector<ClaimedDelivery> DeliveriesClaim(DeliveryKind kind, const std::string& worker, int lease_ms,
                                               int limit);

  // Applies the writes (both kinds may be mixed) in one transaction, guarded by id + state 'sending' +
  // attempts = expected_attempt + locked_by = worker; the row is released (locked_by, lease cleared)
  // by every write. A delivered or failed rating whose feedback was changed by uppzy.rate_job() while
  // it was being sent becomes queued again with attempts 0 (and a wake-up NOTIFY is sent), so the new
  // value is delivered as well. A row appearing twice is applied in two rounds, in order. A row another
  // session holds locked is deferred, never waited on.
  DeliveryApplyResult DeliveriesApplyWrites(const std::string& worker,
                                            const std::vector<DeliveryWrite>& writes) override;

  // Extends the lease of every listed row still `sending` and held by `worker`; returns those renewed.
  // A held row missing from the result was taken from us (rescued): its write will be refused.
  std::vector<DeliveryRef> DeliveriesRenewLeases(const std::string& worker,
                                                 const std::vector<DeliveryRef>& held, int lease_ms) override;

  // sending rows of both kinds whose lease ended -> retrying with run_at = now (or failed when no attempt
  // is left), error lease_expired appended. Safe: both calls may be repeated. Takes at most `limit` rows
  // per table; returns how many were rescued.
  int DeliveriesRescueExpired(int limit) override;

  // True while any rating or close is queued, retrying or sending.
  bool DeliveriesAnyUnfinished() override;

  // uppzy.rate_job(job_id, rating, comment): the rating's id. The duplicate rule is rate_job's (one row
  // per request; a changed rating is stored and sent again; the same rating again changes nothing).
  // Throws StoreError (not transient) when the job is unknown (sqlstate 23503) or not completed (23514);
  // its what() names the job and its state. `comment` is stored, never sent.
  int64_t FeedbackRateJob(int64_t job_id, const std::string& rating,
                          const std::optional<std::string>& comment);

  // uppzy.close_session(session_id): the id of a close request (a pending one is reused).
  int64_t SessionClosesEnqueue(const std::string& session_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
