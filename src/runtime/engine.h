// The engine: every HTTP exchange with Uppzy, on one thread, for thousands of jobs at once.
//
// A job waiting for its next poll is a timer-heap entry, not a thread. Decisions come from the pure
// Decide(); the engine only carries them out: it schedules polls in memory and sends row writes to
// the coordinator. No row is written per poll tick.
//
// Seams: the engine talks to Uppzy only through the UpstreamClient it is given and reads time only
// from its ClockSource, so a test drives it with a fake client and a fake clock, one RunOnce() at a
// time, and reads what it did from the mailbox (row writes, incident reports) and the metrics it was
// handed (every event the engine counts is recorded there, once).
//
// Not thread-safe: Run() (or RunOnce()) owns its thread; only Wakeup() may be called from another.
#pragma once

#include <array>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <unordered_map>

#include "runtime/mailbox.h"
#include "runtime/poll_plans.h"
#include "uppzy/breaker.h"
#include "uppzy/budget.h"
#include "uppzy/clock.h"
#include "uppzy/config.h"
#include "uppzy/key_ring.h"
#include "uppzy/log.h"
#include "uppzy/metrics.h"
#include "uppzy/upstream_client.h"

namespace uppzy::runtime {

class Engine {
 public:
  // `config`, `mailbox`, `metrics`, `client`, `clock` and `keys` must outlive the engine. `keys`, when
  // given, is the ring the client takes its keys from: on a refused key (401/403, or no key) the engine
  // has it re-read its files (at most once per pass) and, when the site's key changed since the request
  // was sent, sends the request again at once instead of opening an incident (DecideKeyRefusal; once
  // per attempt). Without it, every refusal is an incident. Never throws.
  Engine(const Config& config, Mailbox& mailbox, metrics::WorkerMetrics& metrics, UpstreamClient& client,
         const ClockSource& clock, KeyRing* keys = nullptr, const PollPlans* plans = nullptr);

  // Runs RunOnce() until it returns false, then Shutdown(). Returns when the stop is done.
  void Run();

  // One pass of the loop: adopts what the coordinator sent (claims, deliveries, cancellations), fires
  // due polls, starts what may start (or, paused or stopping, hands back what is idle), then lets the
  // client wait for network activity (at most until the next timer, 1 s) and carries out the outcome of
  // every exchange that finished. Returns false, before waiting, once a stop is requested and nothing
  // is in flight or the shutdown grace period has passed.
  bool RunOnce();

  // After the last RunOnce(): hands back every row still held (a submission still in flight stays held:
  // its POST may have reached Uppzy, so its lease covers it) and sets mailbox.engine_done.
  void Shutdown();

  // Interrupts the client's wait. Thread-safe.
  void Wakeup() { client_.Wakeup(); }

 private:
  struct Held {
    ClaimedJob job;
    HeldJob row;
    Phase phase = Phase::kSubmit;
    int poll_errors = 0;
    std::string last_poll_error;
    uint64_t timer_gen = 0;
    bool http_active = false;
    bool cancel_requested = false;
    std::string key_fingerprint;  // of the key the request in flight carried ("" when none)
    bool key_retried = false;     // sent again once for a new key (this attempt)
    // The latest poll that saw the request still in progress (unset: none yet, so the acceptance):
    // the lower end of the answer-time observation (SetAnswerTimes).
    std::optional<TimePoint> not_ready_at;
  };
  struct HeldDelivery {
    ClaimedDelivery d;
    bool http_active = false;
    std::string key_fingerprint;
    bool key_retried = false;
  };
  struct Timer {
    TimePoint at;
    int64_t id;
    uint64_t gen;
    bool operator>(const Timer& o) const { return at > o.at; }
  };

  void Adopt(ClaimedJob job, TimePoint now);
  void Schedule(Held& h, TimePoint at);
  void FireTimers(TimePoint now);
  void StartReady();
  void OnCompletion(Completion& c, TimePoint now);
  void Finish(int64_t id, JobWrite w);
  void HandBack(int64_t id, std::optional<ErrorEntry> error);
  void HandBackIdle();
  bool Paused() const;  // every site this worker serves is paused
  // No Uppzy call for this site now: an incident is open for its key, or was just reported.
  bool SitePaused(const std::string& site) const;
  // Hands back the idle jobs and deliveries of paused sites (after the paused set changed).
  void HandBackPausedSites();
  void ApplyCancels(TimePoint now);
  void Cancel(int64_t id, TimePoint now);
  void PublishBreaker(TimePoint now);
  JobLogFields Fields(const Held& h) const;
  // Deliveries (ratings and session closes): one request each, no polling.
  void AdoptDelivery(ClaimedDelivery d);
  bool StartDelivery(const DeliveryRef& ref, TimePoint now, std::vector<DeliveryRef>* blocked);
  void OnDeliveryCompletion(const DeliveryRef& ref, Outcome& o, TimePoint now);
  void HandBackDelivery(const DeliveryRef& ref, std::optional<ErrorEntry> error);
  void ReportIncident(const Transition& t, const Outcome& o, const JobLogFields& f, const std::string& site,
                      const std::string& fingerprint);
  // The site a job's (or a delivery's) requests go to: today the default site (UPPZY_SITE_ID) for all.
  const std::string& SiteOf(const ClaimedJob& job) const;
  const std::string& SiteOf(const ClaimedDelivery& d) const;
  // Fingerprint of the key the ring holds for `site` now ("" when none, or without a ring).
  std::string FingerprintOf(const std::string& site) const;
  // After a refused key: re-reads the ring (once per pass) and says whether to send again with the
  // site's new key (then marks *retried and logs it) rather than open an incident.
  bool RetryWithNewKey(const std::string& site, const std::string& sent, bool* retried,
                       const JobLogFields& f);
  // The shared budget (issue 10). Off (UPPZY_SHARED_BUDGET=off): every call goes, as before.
  bool BudgetOn() const { return config_.shared_budget == "on"; }
  // Whether a call to `site` may go now: not blocked by a 429, and a token held when the site is
  // budgeted. TakeToken also spends the token and counts the call in the site's rate meter.
  bool TokenAvailable(const std::string& site);
  bool TakeToken(const std::string& site);
  // Takes the coordinator's grants; puts calls that waited for a token back at the front of the ready
  // queues, polls first, as many as there are tokens.
  void AdoptGrants();
  void RequeueStarved();
  // Publishes the calls waiting for a token, per site (the coordinator asks the budget for them).
  void PublishDemand();
  // A 429: blocks the site here at once and reports it, once per block, to the coordinator.
  void OnRateLimited(const std::string& site, const Outcome& o, TimePoint now);
  // Publishes the requests waiting for a connection, and says once a minute when they wait a lot.
  void RecordNetwork(std::chrono::steady_clock::time_point now);

  const Config& config_;
  Mailbox& mailbox_;
  metrics::WorkerMetrics& metrics_;
  UpstreamClient& client_;
  const ClockSource& clock_;
  KeyRing* keys_;
  const PollPlans* plans_;  // null: every poll on the fixed tick
  std::shared_ptr<const PollPlans::Map> plan_now_;
  std::shared_ptr<const std::set<std::string>> paused_now_;  // the coordinator's paused sites, this pass
  std::map<std::string, unsigned long long> report_seq_;     // site -> its latest incident report
  bool handback_paused_ = false;  // the paused sites changed: hand back their idle work once  // this pass's
                                  // plans (RunOnce takes a snapshot)
  bool keys_reloaded_this_pass_ = false;
  std::optional<SteadyTimePoint> grace_deadline_;  // set when the stop is first seen
  std::unordered_map<int64_t, Held> held_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::deque<int64_t> ready_;
  // Exchanges started in the client at most: what curl carries at once, plus three per connection
  // queued so no connection idles. Few enough that a pause or a stop leaves most jobs unsent and
  // cleanly handed back. Follows the client's capacity (it grows when Uppzy speaks HTTP/2).
  size_t max_active_;
  // The client's counters at the last RecordNetwork() and at the start of the current hint window.
  UpstreamStats last_stats_;
  UpstreamStats window_stats_;
  std::chrono::steady_clock::time_point window_start_{};
  unsigned long long reports_sent_ = 0;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> jitter_{0.0, 1.0};
  std::vector<Completion> completions_;
  CircuitBreaker breaker_;
  uint64_t probe_tag_ = 0;  // the half-open probe's request tag, 0 when none
  std::map<DeliveryRef, HeldDelivery> deliveries_;
  // Ready deliveries, one queue per kind: with the jobs' queue, the three take turns for HTTP slots, so
  // a burst of one kind never starves the others.
  std::array<std::deque<DeliveryRef>, 2> ready_deliveries_;

  // The shared budget, per site.
  struct SiteBudget {
    // Tokens held, one entry per grant, oldest first: each grant's tokens not spent within 250 ms are
    // dropped (a grant is ~100 ms of the rate), so an engine never saves up a burst, e.g. while its
    // site is paused and its grants go unused.
    std::deque<std::pair<int, SteadyTimePoint>> grants;
    // Drops expired grants; returns the tokens left.
    int Tokens(SteadyTimePoint now) {
      while (!grants.empty() && (grants.front().first <= 0 || now >= grants.front().second)) {
        grants.pop_front();
      }
      int n = 0;
      for (const auto& g : grants) n += g.first;
      return n;
    }
    TimePoint blocked_until{};   // a 429's block
    TimePoint reported_until{};  // the block already reported to the coordinator
    int rate_limited_in_a_row = 0;
    RateMeter sent;  // this worker's calls to the site
  };
  std::map<std::string, SiteBudget> site_budget_;
  std::shared_ptr<const BudgetView> budget_now_;  // which sites are budgeted (null: none yet)
  // Calls due that wait for a token, per site and kind.
  std::map<std::string, std::deque<int64_t>> starved_polls_;
  std::map<std::string, std::deque<int64_t>> starved_submits_;
  std::map<std::string, std::deque<DeliveryRef>> starved_deliveries_;
  std::map<std::string, int> demand_published_;
};

}  // namespace uppzy::runtime
