// Fakes for the runtime's seams, so Engine and Coordinator run in a unit test with no process, no
// socket, no database and no sleep: a clock that moves only when told, an Uppzy client that records
// what was started and answers what the test scripts, and worker stores over an in-memory table of
// calls. Not thread-safe: a test drives everything from its own thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "uppzy/clock.h"
#include "uppzy/upstream_client.h"
#include "uppzy/worker_store.h"

namespace uppzy::test {

// Both clocks start at fixed points and move together, only through Advance().
class FakeClock final : public ClockSource {
 public:
  static TimePoint Start() { return TimePoint(std::chrono::seconds(1'700'000'000)); }
  TimePoint Now() const override { return Start() + offset_; }
  SteadyTimePoint SteadyNow() const override { return SteadyTimePoint(std::chrono::hours(1000)) + offset_; }
  void Advance(Millis d) { offset_ += d; }

 private:
  Millis offset_{0};
};

// An Uppzy client that sends nothing: Start* calls are recorded, and an exchange finishes when the
// test answers it (returned by the next Perform, which never waits).
class FakeUpstream final : public UpstreamClient {
 public:
  struct Call {
    RequestKind kind = RequestKind::kSubmit;
    uint64_t tag = 0;
    int64_t job_id = 0;  // submit only
    int attempt = 0;     // submit only
    std::string request_id;
    std::string session_id;
    std::string feedback;
  };

  void StartSubmit(uint64_t tag, const std::string&, int64_t job_id, int attempt,
                   const std::string& session_id, const std::string&, const std::string&) override {
    Start({RequestKind::kSubmit, tag, job_id, attempt, {}, session_id, {}});
  }
  void StartStatus(uint64_t tag, const std::string&, const std::string& request_id) override {
    Start({RequestKind::kStatus, tag, 0, 0, request_id, {}, {}});
  }
  void StartFeedback(uint64_t tag, const std::string&, const std::string& session_id,
                     const std::string& request_id, const std::string& feedback) override {
    Start({RequestKind::kFeedback, tag, 0, 0, request_id, session_id, feedback});
  }
  void StartSessionClose(uint64_t tag, const std::string&, const std::string& session_id) override {
    Start({RequestKind::kSessionClose, tag, 0, 0, {}, session_id, {}});
  }
  size_t Perform(long max_wait_ms, std::vector<Completion>* out) override {
    waits.push_back(max_wait_ms);
    const size_t n = answered_.size();
    for (auto& c : answered_) {
      active_.erase(c.tag);
      out->push_back(std::move(c));
    }
    answered_.clear();
    return n;
  }
  void Wakeup() override {}
  size_t InFlight() const override { return active_.size(); }
  UpstreamStats Stats() const override {
    UpstreamStats s;
    s.capacity = 64;  // room for every exchange a test starts
    return s;
  }

  // Finishes the exchange in flight under `tag` with `o`; throws std::logic_error if there is none.
  void Answer(uint64_t tag, Outcome o) {
    auto it = active_.find(tag);
    if (it == active_.end()) throw std::logic_error("no exchange in flight for tag " + std::to_string(tag));
    answered_.push_back(Completion{tag, it->second, std::move(o)});
  }
  // The last call started, or throws std::logic_error when there is none.
  const Call& Last() const {
    if (calls.empty()) throw std::logic_error("no call was started");
    return calls.back();
  }

  std::vector<Call> calls;  // every Start*, in order
  std::vector<long> waits;  // max_wait_ms of every Perform, in order

 private:
  void Start(Call c) {
    active_[c.tag] = c.kind;
    calls.push_back(std::move(c));
  }
  std::map<uint64_t, RequestKind> active_;
  std::vector<Completion> answered_;
};

// The "database" behind the fake stores: it outlives them, so a reconnect (new stores) sees the same
// rows, and it records every call a test may want to assert on. Defaults: nothing to claim, every
// write applied, every lease renewed, no incident.
struct FakeDb {
  // Connecting: throws a transient StoreError while `down`.
  bool down = false;
  int connects = 0;

  // Jobs.
  int queued = 0;                     // claimable rows; claims take from here
  std::vector<ClaimedJob> adoptable;  // polling rows whose lease ended
  int64_t next_id = 1;
  std::vector<int> claim_limits;                   // `limit` of every JobsClaimQueued
  std::vector<int> adopt_limits;                   // `limit` of every JobsAdoptPolling
  std::vector<int> handed_back_limits;             // `limit` of every JobsAdoptHandedBack
  bool sweep_due = true;                           // what LeasesSweepDue says
  int sweep_due_asked = 0;                         // LeasesSweepDue calls
  int rescue_sweeps = 0;                           // JobsRescueExpiredSubmitting calls
  std::vector<std::vector<JobWrite>> job_batches;  // every JobsApplyWrites batch, in order
  // Scripts JobsApplyWrites: the result for a batch (may throw StoreError). Empty: all applied.
  std::function<ApplyResult(const std::vector<JobWrite>&)> on_apply;
  std::vector<std::vector<int64_t>> renewals;  // ids of every JobsRenewLeases
  std::vector<int64_t> cancel_requested;       // returned (once) by JobsCancelRequested
  bool any_unfinished = true;

  // Incidents and the workers table.
  std::optional<int64_t> open_incident;
  std::vector<std::string> incidents_opened;  // kind of every IncidentsOpen
  std::vector<std::string> heartbeats;        // breaker_state of every WorkersHeartbeat
  std::vector<bool> heartbeats_starting;      // `starting` of every WorkersHeartbeat
  bool stopped = false;

  // Deliveries.
  std::map<DeliveryKind, int> deliveries_queued;
  std::vector<std::pair<DeliveryKind, int>> delivery_claims;  // {kind, limit} of every claim
  std::vector<std::vector<DeliveryWrite>> delivery_batches;
  std::function<DeliveryApplyResult(const std::vector<DeliveryWrite>&)> on_apply_deliveries;

  ClaimedJob NewClaim(JobState state) {
    ClaimedJob j;
    j.id = next_id++;
    j.session_id = "s" + std::to_string(j.id);
    j.message = "hello";
    j.response_language = "en";
    j.state = state;
    j.attempt = 1;
    j.max_attempts = 3;
    return j;
  }
};

class FakeJobStore final : public WorkerJobStore {
 public:
  explicit FakeJobStore(FakeDb& db) : db_(db) {}
  std::vector<ClaimedJob> JobsClaimQueued(const std::string&, int, const ClaimScope& scope) override {
    int limit = scope.Total();
    db_.claim_limits.push_back(limit);
    std::vector<ClaimedJob> out;
    for (; limit > 0 && db_.queued > 0; --limit, --db_.queued)
      out.push_back(db_.NewClaim(JobState::kSubmitting));
    return out;
  }
  std::vector<ClaimedJob> JobsAdoptPolling(const std::string&, int, const ClaimScope&, int limit) override {
    db_.adopt_limits.push_back(limit);
    const auto n = std::min(db_.adoptable.size(), static_cast<size_t>(std::max(limit, 0)));
    std::vector<ClaimedJob> out(db_.adoptable.begin(),
                                db_.adoptable.begin() + static_cast<std::ptrdiff_t>(n));
    db_.adoptable.erase(db_.adoptable.begin(), db_.adoptable.begin() + static_cast<std::ptrdiff_t>(n));
    return out;
  }
  std::vector<ClaimedJob> JobsAdoptHandedBack(const std::string&, int, const ClaimScope&,
                                              int limit) override {
    db_.handed_back_limits.push_back(limit);
    return {};
  }
  bool LeasesSweepDue(Millis) override {
    ++db_.sweep_due_asked;
    return db_.sweep_due;
  }
  int JobsRescueExpiredSubmitting(int) override {
    ++db_.rescue_sweeps;
    return 0;
  }
  ApplyResult JobsApplyWrites(const std::string&, const std::vector<JobWrite>& writes) override {
    db_.job_batches.push_back(writes);
    if (db_.on_apply) return db_.on_apply(writes);
    ApplyResult r;
    for (const auto& w : writes) {
      if (std::find(r.applied.begin(), r.applied.end(), w.id) == r.applied.end()) r.applied.push_back(w.id);
    }
    return r;
  }
  std::vector<int64_t> JobsRenewLeases(const std::string&, const std::vector<int64_t>& ids, int) override {
    std::vector<int64_t> sorted(ids);
    std::sort(sorted.begin(), sorted.end());
    db_.renewals.push_back(sorted);
    return ids;
  }
  bool JobsAnyUnfinished() override { return db_.any_unfinished; }
  std::vector<int64_t> JobsCancelRequested(const std::string&) override {
    std::vector<int64_t> out;
    out.swap(db_.cancel_requested);
    return out;
  }
  std::pair<int64_t, bool> IncidentsOpen(const std::string& kind, int, const std::string&, const std::string&,
                                         const std::string&, const std::string&) override {
    db_.incidents_opened.push_back(kind);
    const bool created = !db_.open_incident;
    if (created) db_.open_incident = static_cast<int64_t>(db_.incidents_opened.size());
    return {*db_.open_incident, created};
  }
  std::optional<int64_t> IncidentsOpenFor(const std::string&) override { return db_.open_incident; }
  void WorkersHeartbeat(const std::string&, const std::string&, int, const std::string&,
                        const std::vector<std::string>&, int, int, const std::string& breaker_state,
                        bool starting) override {
    db_.heartbeats.push_back(breaker_state);
    db_.heartbeats_starting.push_back(starting);
  }
  void WorkersStopped(const std::string&) override { db_.stopped = true; }

 private:
  FakeDb& db_;
};

class FakeDeliveryStore final : public WorkerDeliveryStore {
 public:
  explicit FakeDeliveryStore(FakeDb& db) : db_(db) {}
  std::vector<ClaimedDelivery> DeliveriesClaim(DeliveryKind kind, const std::string&, int, const ClaimScope&,
                                               int limit) override {
    db_.delivery_claims.emplace_back(kind, limit);
    std::vector<ClaimedDelivery> out;
    int& queued = db_.deliveries_queued[kind];
    for (; limit > 0 && queued > 0; --limit, --queued) {
      ClaimedDelivery d;
      d.id = db_.next_id++;
      d.kind = kind;
      d.session_id = "s" + std::to_string(d.id);
      d.attempt = 1;
      d.max_attempts = 3;
      out.push_back(std::move(d));
    }
    return out;
  }
  DeliveryApplyResult DeliveriesApplyWrites(const std::string&,
                                            const std::vector<DeliveryWrite>& writes) override {
    db_.delivery_batches.push_back(writes);
    if (db_.on_apply_deliveries) return db_.on_apply_deliveries(writes);
    DeliveryApplyResult r;
    for (const auto& w : writes) r.applied.push_back(w.ref());
    return r;
  }
  std::vector<DeliveryRef> DeliveriesRenewLeases(const std::string&, const std::vector<DeliveryRef>& held,
                                                 int) override {
    return held;
  }
  int DeliveriesRescueExpired(int) override { return 0; }
  bool DeliveriesAnyUnfinished() override { return false; }

 private:
  FakeDb& db_;
};

// A WorkerStoreFactory over `db` (which must outlive it): fails while db.down, counts connects.
inline WorkerStoreFactory FakeStores(FakeDb& db) {
  return [&db] {
    if (db.down) throw StoreError("connection refused (fake)", /*transient=*/true);
    ++db.connects;
    WorkerStores s;
    s.jobs = std::make_unique<FakeJobStore>(db);
    s.deliveries = std::make_unique<FakeDeliveryStore>(db);
    return s;
  };
}

}  // namespace uppzy::test
