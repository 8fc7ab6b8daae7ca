#include "runtime/engine.h"

#include "uppzy/delivery_policy.h"
#include "uppzy/key_refusal.h"
#include "uppzy/log.h"
#include "uppzy/policy.h"

namespace uppzy::runtime {
namespace {

// Request tags: a job's tag is its id; a delivery's carries its kind in the top bits (ids per table).
constexpr int kKindShift = 60;
uint64_t TagOf(const DeliveryRef& r) {
  return (static_cast<uint64_t>(r.kind) + 1) << kKindShift | static_cast<uint64_t>(r.id);
}
std::optional<DeliveryRef> DeliveryOfTag(uint64_t tag) {
  const uint64_t kind = tag >> kKindShift;
  if (kind == 0) return std::nullopt;
  return DeliveryRef{static_cast<DeliveryKind>(kind - 1),
                     static_cast<int64_t>(tag & ((1ULL << kKindShift) - 1))};
}

JobLogFields DeliveryFields(const ClaimedDelivery& d, const Outcome* o) {
  JobLogFields f;
  f.job_id = d.id;
  f.attempt = d.attempt;
  f.state = JobState::kSubmitting;
  f.request_id = d.request_id;
  if (o) {
    f.http_status = o->http_status;
    f.duration_ms = o->duration.count();
  }
  return f;
}

}  // namespace

Engine::Engine(const Config& config, Mailbox& mailbox, metrics::WorkerMetrics& metrics,
               UpstreamClient& client, const ClockSource& clock, KeyRing* keys, const PollPlans* plans)
    : config_(config),
      mailbox_(mailbox),
      metrics_(metrics),
      client_(client),
      clock_(clock),
      keys_(keys),
      plans_(plans),
      // Enough started exchanges to keep every connection busy, few enough that a pause or a stop
      // leaves most jobs unsent and cleanly handed back.
      max_active_(static_cast<size_t>(config.http_max_connections) * 4),
      rng_(std::random_device{}()),
      breaker_(config.breaker) {}

void Engine::PublishBreaker(TimePoint now) {
  const BreakerState state = breaker_.state();
  if (mailbox_.breaker_state.exchange(state) == state) return;
  metrics_.SetBreakerState(state);
  const auto until = std::chrono::duration_cast<Millis>(breaker_.open_until() - now).count();
  LogEvent(breaker_.state() == BreakerState::kClosed ? spdlog::level::info : spdlog::level::warn,
           "circuit_breaker",
           {{"state", std::string(ToString(breaker_.state()))},
            {"reopens_in_ms", std::to_string(std::max<long long>(until, 0))}});
  mailbox_.WakeDb();  // claims follow the breaker
}

void Engine::Cancel(int64_t id, TimePoint now) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  Held& h = it->second;
  if (h.http_active) {
    h.cancel_requested = true;  // finished as cancelled when the call returns
    return;
  }
  Transition t;
  t.action = Action::kFail;
  t.error_kind = ErrorKind::kCancelled;
  t.message = "cancelled on request while " + std::string(ToString(h.row.row_state));
  JobWrite w = WriteFinishedAttempt(h.row, t, now);
  w.new_state = JobState::kCancelled;
  JobLogFields f = Fields(h);
  f.state = JobState::kCancelled;
  f.error_kind = ErrorKind::kCancelled;
  LogJob(spdlog::level::info, "job_cancelled", f);
  metrics_.JobFinished(JobState::kCancelled, ErrorKind::kCancelled);
  Finish(id, std::move(w));
}

void Engine::ApplyCancels(TimePoint now) {
  for (int64_t id : mailbox_.TakeCancels()) Cancel(id, now);
}

bool Engine::Paused() const { return mailbox_.paused.load(); }

bool Engine::SitePaused(const std::string& site) const {
  if (mailbox_.paused.load()) return true;
  if (paused_now_ && paused_now_->count(site) > 0) return true;
  // Reported and not yet recorded by the coordinator: stopped already, so no second request is refused.
  const auto it = report_seq_.find(site);
  return it != report_seq_.end() && mailbox_.reports_processed.load() < it->second;
}

void Engine::HandBackPausedSites() {
  std::vector<int64_t> idle;
  for (const auto& [id, h] : held_) {
    if (!h.http_active && SitePaused(SiteOf(h.job))) idle.push_back(id);
  }
  for (int64_t id : idle) HandBack(id, std::nullopt);
  std::vector<DeliveryRef> idle_deliveries;
  for (const auto& [ref, h] : deliveries_) {
    if (!h.http_active && SitePaused(SiteOf(h.d))) idle_deliveries.push_back(ref);
  }
  for (const auto& ref : idle_deliveries) HandBackDelivery(ref, std::nullopt);
  // Their calls no longer wait for a token (they were handed back with the rest).
  for (auto* starved : {&starved_polls_, &starved_submits_}) {
    for (auto it = starved->begin(); it != starved->end();) {
      it = SitePaused(it->first) ? starved->erase(it) : std::next(it);
    }
  }
  for (auto it = starved_deliveries_.begin(); it != starved_deliveries_.end();) {
    it = SitePaused(it->first) ? starved_deliveries_.erase(it) : std::next(it);
  }
}

JobLogFields Engine::Fields(const Held& h) const {
  JobLogFields f;
  f.job_id = h.row.id;
  f.attempt = h.row.attempt;
  f.state = h.row.row_state;
  f.request_id = h.row.request_id;
  return f;
}

void Engine::Adopt(ClaimedJob job, TimePoint now) {
  const int64_t id = job.id;
  Held h;
  h.row = HeldJob::Of(job);
  h.phase = job.state == JobState::kPolling ? Phase::kPoll : Phase::kSubmit;
  h.job = std::move(job);
  if (h.phase == Phase::kPoll) h.job.message.clear();  // only a submission needs the text
  auto [it, inserted] = held_.emplace(id, std::move(h));
  if (!inserted) return;  // already ours (cannot happen: the claim is guarded), keep the first
  metrics_.SetInFlight(held_.size());
  LogJob(spdlog::level::debug, it->second.phase == Phase::kPoll ? "job_adopted" : "job_claimed",
         Fields(it->second));
  Schedule(it->second, now);
}

void Engine::Schedule(Held& h, TimePoint at) {
  ++h.timer_gen;
  timers_.push(Timer{at, h.row.id, h.timer_gen});
}

void Engine::FireTimers(TimePoint now) {
  while (!timers_.empty() && timers_.top().at <= now) {
    Timer t = timers_.top();
    timers_.pop();
    auto it = held_.find(t.id);
    if (it == held_.end() || it->second.timer_gen != t.gen || it->second.http_active) continue;
    ready_.push_back(t.id);
  }
}

void Engine::StartReady() {
  const TimePoint now = clock_.Now();
  max_active_ = client_.Stats().capacity + static_cast<size_t>(config_.http_max_connections) * 3;
  std::vector<int64_t> blocked;
  std::vector<DeliveryRef> blocked_deliveries;
  // Jobs, ratings and session closes take turns for HTTP slots (a fair share for each kind).
  bool progress = true;
  while (progress && client_.InFlight() < max_active_) {
    progress = false;
    while (!ready_.empty()) {
      const int64_t id = ready_.front();
      ready_.pop_front();
      auto it = held_.find(id);
      if (it == held_.end() || it->second.http_active) continue;
      Held& h = it->second;
      if (SitePaused(SiteOf(h.job))) {
        HandBack(id, std::nullopt);  // its site has an open incident: no call, nothing charged
        continue;
      }
      const auto tag = static_cast<uint64_t>(id);
      if (!TokenAvailable(SiteOf(h.job))) {
        // Over the site's budget (or blocked by a 429): it waits, held, for the next grant.
        (h.phase == Phase::kSubmit ? starved_submits_ : starved_polls_)[SiteOf(h.job)].push_back(id);
        continue;
      }
      if (h.phase == Phase::kSubmit) {
        if (!breaker_.AllowSubmit(now)) {
          blocked.push_back(id);
          continue;
        }
        TakeToken(SiteOf(h.job));
        if (breaker_.state() == BreakerState::kHalfOpen) probe_tag_ = tag;
        h.http_active = true;
        h.key_fingerprint = FingerprintOf(SiteOf(h.job));
        metrics_.Submitted();
        client_.StartSubmit(tag, SiteOf(h.job), id, h.row.attempt, h.job.session_id, h.job.message,
                            h.job.response_language);
      } else {
        TakeToken(SiteOf(h.job));
        h.http_active = true;
        h.key_fingerprint = FingerprintOf(SiteOf(h.job));
        metrics_.Polled();
        client_.StartStatus(tag, SiteOf(h.job), h.row.request_id);
      }
      progress = true;
      break;
    }
    for (auto& queue : ready_deliveries_) {
      if (client_.InFlight() >= max_active_) break;
      while (!queue.empty()) {
        const DeliveryRef ref = queue.front();
        queue.pop_front();
        if (StartDelivery(ref, now, &blocked_deliveries)) {
          progress = true;
          break;
        }
      }
    }
  }
  PublishBreaker(now);
  // Requests the breaker holds back: while it is open they go back uncharged (a long outage must not
  // burn queued jobs' attempts); while a half-open probe is out they wait for its answer.
  const bool open = breaker_.state() == BreakerState::kOpen;
  for (int64_t id : blocked) {
    if (open) {
      HandBack(id, std::nullopt);
    } else {
      ready_.push_back(id);
    }
  }
  for (const auto& ref : blocked_deliveries) {
    if (open) {
      HandBackDelivery(ref, std::nullopt);
    } else {
      ready_deliveries_[static_cast<size_t>(ref.kind)].push_back(ref);
    }
  }
}

void Engine::RecordNetwork(std::chrono::steady_clock::time_point now) {
  const UpstreamStats s = client_.Stats();
  size_t ready = ready_.size();
  for (const auto& q : ready_deliveries_) ready += q.size();
  metrics_.SetHttpWaiting(s.waiting + (Paused() ? 0 : ready));
  metrics_.AddConnectionWait(s.waited_seconds - last_stats_.waited_seconds);
  last_stats_ = s;

  // Connection-bound: over a window, requests spent longer queued for a connection than a quarter of
  // their time on the wire. Little's law says why: connections >= requests/s x round trip.
  constexpr auto kWindow = std::chrono::seconds(60);
  if (window_start_ == std::chrono::steady_clock::time_point{}) window_start_ = now;
  if (now - window_start_ < kWindow) return;
  const double waited = s.waited_seconds - window_stats_.waited_seconds;
  const double on_wire = s.answered_seconds - window_stats_.answered_seconds;
  const uint64_t answered = s.answered - window_stats_.answered;
  const double window_s = std::chrono::duration<double>(now - window_start_).count();
  window_stats_ = s;
  window_start_ = now;
  if (answered == 0 || waited <= 0.25 * on_wire) return;
  const double round_trip_ms = 1000.0 * on_wire / static_cast<double>(answered);
  LogEvent(
      spdlog::level::warn, "connection_bound",
      {{"connections", std::to_string(config_.http_max_connections)},
       {"http2", s.multiplexing ? "true" : "false"},
       {"requests_per_s", std::to_string(static_cast<long long>(static_cast<double>(answered) / window_s))},
       {"mean_exchange_ms", std::to_string(static_cast<long long>(round_trip_ms))},
       {"mean_wait_ms",
        std::to_string(static_cast<long long>(1000.0 * waited / static_cast<double>(answered)))},
       {"waiting_now", std::to_string(s.waiting + ready)},
       {"hint",
        "requests wait for a free connection to Uppzy: raise UPPZY_HTTP_MAX_CONNECTIONS (connections >= "
        "requests/s x round trip; README, \"Connections to Uppzy\")"}});
}

bool Engine::StartDelivery(const DeliveryRef& ref, TimePoint now, std::vector<DeliveryRef>* blocked) {
  auto it = deliveries_.find(ref);
  if (it == deliveries_.end() || it->second.http_active) return false;
  if (SitePaused(SiteOf(it->second.d))) {
    HandBackDelivery(ref, std::nullopt);
    return false;
  }
  if (!TokenAvailable(SiteOf(it->second.d))) {
    starved_deliveries_[SiteOf(it->second.d)].push_back(ref);
    return false;
  }
  if (!breaker_.AllowSubmit(now)) {
    blocked->push_back(ref);
    return false;
  }
  TakeToken(SiteOf(it->second.d));
  const uint64_t tag = TagOf(ref);
  if (breaker_.state() == BreakerState::kHalfOpen) probe_tag_ = tag;
  const ClaimedDelivery& d = it->second.d;
  it->second.http_active = true;
  it->second.key_fingerprint = FingerprintOf(SiteOf(d));
  if (d.kind == DeliveryKind::kFeedback) {
    client_.StartFeedback(tag, SiteOf(d), d.session_id, d.request_id, d.feedback);
  } else {
    client_.StartSessionClose(tag, SiteOf(d), d.session_id);
  }
  return true;
}

void Engine::AdoptDelivery(ClaimedDelivery d) {
  const DeliveryRef ref = d.ref();
  HeldDelivery held;
  held.d = std::move(d);
  auto [it, inserted] = deliveries_.emplace(ref, std::move(held));
  if (!inserted) return;
  ready_deliveries_[static_cast<size_t>(ref.kind)].push_back(ref);
}

void Engine::HandBackDelivery(const DeliveryRef& ref, std::optional<ErrorEntry> error) {
  auto it = deliveries_.find(ref);
  if (it == deliveries_.end()) return;
  mailbox_.PushDeliveryWrite(WriteDeliveryHandBack(it->second.d, std::move(error)));
  deliveries_.erase(it);
}

void Engine::ReportIncident(const Transition& t, const Outcome& o, const JobLogFields& f,
                            const std::string& site, const std::string& fingerprint) {
  if (!SitePaused(site)) {
    // One line per incident, not one per job; the coordinator records the incident row.
    LogJob(spdlog::level::err, "configuration_incident", f,
           "Uppzy refused the API key of site " + site + " (fingerprint " + fingerprint +
               "); pausing that site's Uppzy calls until an operator runs `uppzy-worker incidents resolve`");
  }
  report_seq_[site] = ++reports_sent_;
  handback_paused_ = true;
  mailbox_.PushIncident(IncidentReport{t.error_kind, o.http_status, t.message, site, fingerprint});
}

// The store reads a NULL site as the claim's default site, so site_id is set for every claimed row;
// an empty one (a row handed over by a test's store without scope) is the default site.
const std::string& Engine::SiteOf(const ClaimedJob& job) const {
  return job.site_id.empty() ? config_.site.site_id : job.site_id;
}

const std::string& Engine::SiteOf(const ClaimedDelivery& d) const {
  return d.site_id.empty() ? config_.site.site_id : d.site_id;
}

std::string Engine::FingerprintOf(const std::string& site) const {
  if (keys_ == nullptr) return {};
  std::optional<Key> key = keys_->Get(site);
  return key ? key->fingerprint : std::string();
}

bool Engine::RetryWithNewKey(const std::string& site, const std::string& sent, bool* retried,
                             const JobLogFields& f) {
  if (keys_ == nullptr) return false;
  if (!keys_reloaded_this_pass_) {
    keys_reloaded_this_pass_ = true;
    LogKeyReload(keys_->Reload(), "unauthorized");
  }
  const std::string current = FingerprintOf(site);
  if (DecideKeyRefusal(sent, current, *retried) != KeyRefusalAction::kRetryWithNewKey) return false;
  *retried = true;
  LogJob(spdlog::level::warn, "key_rotated_retrying", f,
         "Uppzy refused the key with fingerprint " + sent + "; site '" + site +
             "' now has the key with fingerprint " + current + ": sending again with it");
  return true;
}

void Engine::OnDeliveryCompletion(const DeliveryRef& ref, Outcome& o, TimePoint now) {
  auto it = deliveries_.find(ref);
  if (it == deliveries_.end()) return;
  const ClaimedDelivery& d = it->second.d;
  it->second.http_active = false;
  DeliveryTransition t = DecideDelivery(DeliveryContext::Of(d), o, now, config_.policy, jitter_(rng_));
  JobLogFields f = DeliveryFields(d, &o);
  f.error_kind = t.error_kind;
  const std::string event = std::string(ToString(d.kind)) + "_" + std::string(ToString(t.action));
  if (t.action == DeliveryAction::kIncident &&
      RetryWithNewKey(SiteOf(d), it->second.key_fingerprint, &it->second.key_retried, f)) {
    ready_deliveries_[static_cast<size_t>(ref.kind)].push_back(ref);
    return;
  }
  if (t.action == DeliveryAction::kIncident) {
    Transition jt;
    jt.error_kind = t.error_kind;
    jt.message = t.message;
    ReportIncident(jt, o, f, SiteOf(d), it->second.key_fingerprint);
    ErrorEntry e;
    e.attempt = d.attempt;
    e.at = now;
    e.kind = t.error_kind;
    e.http_status = o.http_status;
    e.message = t.message + " (configuration incident; returned without using an attempt)";
    HandBackDelivery(ref, std::move(e));
    return;
  }
  LogJob(t.action == DeliveryAction::kDeliver ? spdlog::level::info : spdlog::level::warn, event, f,
         t.action == DeliveryAction::kDeliver ? std::string_view{} : std::string_view(t.message));
  mailbox_.PushDeliveryWrite(WriteDeliveryOutcome(d, t, now));
  deliveries_.erase(it);
}

void Engine::Finish(int64_t id, JobWrite w) {
  held_.erase(id);
  metrics_.SetInFlight(held_.size());
  mailbox_.PushWrite(std::move(w));
}

void Engine::HandBack(int64_t id, std::optional<ErrorEntry> error) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  LogJob(spdlog::level::debug, "job_handed_back", Fields(it->second));
  JobWrite w = WriteHandBack(it->second.row, std::move(error));
  Finish(id, std::move(w));
}

void Engine::HandBackIdle() {
  std::vector<int64_t> idle;
  for (const auto& [id, h] : held_) {
    if (!h.http_active) idle.push_back(id);
  }
  for (int64_t id : idle) HandBack(id, std::nullopt);
  ready_.clear();
  std::vector<DeliveryRef> idle_deliveries;
  for (const auto& [ref, h] : deliveries_) {
    if (!h.http_active) idle_deliveries.push_back(ref);
  }
  for (const auto& ref : idle_deliveries) HandBackDelivery(ref, std::nullopt);
  for (auto& q : ready_deliveries_) q.clear();
  starved_polls_.clear();
  starved_submits_.clear();
  starved_deliveries_.clear();
}

void Engine::OnCompletion(Completion& c, TimePoint now) {
  const bool was_probe = probe_tag_ == c.tag;
  if (was_probe) probe_tag_ = 0;
  breaker_.Record(c.outcome, was_probe, now);
  PublishBreaker(now);
  metrics_.HttpExchange(ToString(c.kind), c.outcome.duration);
  {
    const std::string* site = nullptr;
    if (auto ref = DeliveryOfTag(c.tag)) {
      if (auto d = deliveries_.find(*ref); d != deliveries_.end()) site = &SiteOf(d->second.d);
    } else if (auto j = held_.find(static_cast<int64_t>(c.tag)); j != held_.end()) {
      site = &SiteOf(j->second.job);
    }
    if (site != nullptr && c.outcome.kind == OutcomeKind::kRateLimited) {
      OnRateLimited(*site, c.outcome, now);
    } else if (site != nullptr && c.outcome.http_status > 0) {
      if (auto b = site_budget_.find(*site); b != site_budget_.end()) b->second.rate_limited_in_a_row = 0;
    }
  }
  if (auto ref = DeliveryOfTag(c.tag)) {
    OnDeliveryCompletion(*ref, c.outcome, now);
    return;
  }
  const auto id = static_cast<int64_t>(c.tag);
  auto it = held_.find(id);
  if (it == held_.end()) return;
  Held& h = it->second;
  h.http_active = false;
  Outcome& o = c.outcome;
  if (h.phase == Phase::kPoll) ++h.row.polls;

  JobContext ctx;
  ctx.phase = h.phase;
  ctx.attempt = h.row.attempt;
  ctx.max_attempts = h.job.max_attempts;
  ctx.poll_deadline = h.job.poll_deadline;
  ctx.poll_errors = h.poll_errors;
  ctx.last_poll_error = h.last_poll_error;
  ctx.accepted_at = h.job.submitted_at;
  const PollPlans::Site* site_poll = PollPlans::Find(plan_now_, SiteOf(h.job));
  ctx.plan = site_poll != nullptr && site_poll->plan.adaptive() ? &site_poll->plan : nullptr;
  Transition t =
      Decide(ctx, o, now, site_poll != nullptr ? site_poll->policy : config_.policy, jitter_(rng_));
  if (h.cancel_requested && t.action != Action::kComplete && t.action != Action::kFail) {
    if (t.action == Action::kAccept) {
      // Accepted just now: store the request_id first so the history shows what was sent.
      mailbox_.PushWrite(WriteAccepted(h.row, o.request_id, now, t.deadline));
      h.row.row_state = JobState::kPolling;
      h.row.request_id = o.request_id;
    }
    Cancel(id, now);
    return;
  }

  JobLogFields f = Fields(h);
  f.http_status = o.http_status;
  f.duration_ms = o.duration.count();
  f.error_kind = t.error_kind;

  switch (t.action) {
    case Action::kAccept: {
      h.row.request_id = o.request_id;
      h.job.poll_deadline = t.deadline;
      h.job.submitted_at = now;  // the poll plan counts from here
      h.job.message.clear();
      h.job.message.shrink_to_fit();
      mailbox_.PushWrite(WriteAccepted(h.row, o.request_id, now, t.deadline));
      h.row.row_state = JobState::kPolling;
      h.row.polls = 0;
      h.phase = Phase::kPoll;
      h.poll_errors = 0;
      h.not_ready_at.reset();
      f.state = JobState::kPolling;
      f.request_id = h.row.request_id;
      LogJob(spdlog::level::debug, "job_accepted", f);
      Schedule(h, t.at);
      return;
    }
    case Action::kAwaitPoll:
      h.poll_errors = t.poll_error ? h.poll_errors + 1 : 0;
      h.last_poll_error = t.poll_error ? t.message : std::string();
      if (!t.poll_error) h.not_ready_at = now;
      if (t.poll_error) LogJob(spdlog::level::warn, "poll_failed", f, t.message);
      Schedule(h, t.at);
      return;
    case Action::kComplete: {
      metrics_.JobFinished(JobState::kCompleted, ErrorKind::kNone);
      metrics_.Answered(h.job.created_at, now);
      f.state = JobState::kCompleted;
      LogJob(spdlog::level::info, "job_completed", f);
      JobWrite w = WriteCompleted(h.row, std::move(o.answer), std::move(o.result_json));
      SetAnswerTimes(w, h.job.submitted_at, h.not_ready_at.value_or(h.job.submitted_at), now);
      metrics_.AnswerSeen(
          SiteOf(h.job), h.row.polls,
          std::chrono::duration<double>(now - h.not_ready_at.value_or(h.job.submitted_at)).count());
      Finish(id, std::move(w));
      return;
    }
    case Action::kRetry:
    case Action::kFail: {
      const bool retry = t.action == Action::kRetry;
      retry ? metrics_.AttemptRetried(t.error_kind) : metrics_.JobFinished(JobState::kFailed, t.error_kind);
      f.state = retry ? JobState::kRetrying : JobState::kFailed;
      LogJob(retry ? spdlog::level::warn : spdlog::level::info, retry ? "job_retrying" : "job_failed", f,
             t.message);
      JobWrite w = WriteFinishedAttempt(h.row, t, now);
      // A poll timeout that ends the job is an observation too: the answer came after the last poll,
      // if ever. (A retry starts a new submission, whose own polls will tell.)
      if (!retry && t.error_kind == ErrorKind::kPollTimeout) {
        SetAnswerTimes(w, h.job.submitted_at, h.not_ready_at.value_or(h.job.submitted_at), std::nullopt);
      }
      Finish(id, std::move(w));
      return;
    }
    case Action::kIncident: {
      if (RetryWithNewKey(SiteOf(h.job), h.key_fingerprint, &h.key_retried, f)) {
        ready_.push_back(id);
        return;
      }
      ReportIncident(t, o, f, SiteOf(h.job), h.key_fingerprint);
      ErrorEntry e;
      e.attempt = h.row.attempt;
      e.at = now;
      e.kind = t.error_kind;
      e.http_status = o.http_status;
      e.message = t.message + " (configuration incident; job returned without using an attempt)";
      e.request_id = h.row.request_id;
      HandBack(id, std::move(e));
      return;
    }
  }
}

bool Engine::TokenAvailable(const std::string& site) {
  if (!BudgetOn()) return true;
  auto it = site_budget_.find(site);
  if (it == site_budget_.end()) {
    // Never granted and never limited: free unless the budget says the site is budgeted.
    return !(budget_now_ && budget_now_->budgeted.count(site) > 0);
  }
  SiteBudget& b = it->second;
  if (b.blocked_until > clock_.Now()) return false;
  if (!(budget_now_ && budget_now_->budgeted.count(site) > 0)) return true;
  return b.Tokens(clock_.SteadyNow()) > 0;
}

bool Engine::TakeToken(const std::string& site) {
  if (!BudgetOn()) return true;
  if (!TokenAvailable(site)) return false;
  SiteBudget& b = site_budget_[site];
  if (budget_now_ && budget_now_->budgeted.count(site) > 0) {
    b.Tokens(clock_.SteadyNow());  // drops the expired, so the oldest left is spent first
    if (!b.grants.empty()) --b.grants.front().first;
  }
  b.sent.Add(clock_.SteadyNow());
  return true;
}

void Engine::AdoptGrants() {
  if (!BudgetOn()) return;
  budget_now_ = mailbox_.Budget();
  const auto now = clock_.SteadyNow();
  for (const auto& [site, n] : mailbox_.TakeTokens()) {
    if (n > 0) site_budget_[site].grants.emplace_back(n, now + Millis(250));
  }
}

void Engine::RequeueStarved() {
  if (starved_polls_.empty() && starved_submits_.empty() && starved_deliveries_.empty()) return;
  std::set<std::string> sites;
  for (const auto& [site, q] : starved_polls_) sites.insert(site);
  for (const auto& [site, q] : starved_submits_) sites.insert(site);
  for (const auto& [site, q] : starved_deliveries_) sites.insert(site);
  std::vector<int64_t> polls, submits;
  for (const auto& site : sites) {
    if (!TokenAvailable(site)) continue;
    const bool budgeted = budget_now_ && budget_now_->budgeted.count(site) > 0;
    // As many as the tokens held (all when the site is not budgeted), polls, then deliveries, then
    // submissions: finishing work already started comes first.
    size_t room = budgeted ? static_cast<size_t>(site_budget_[site].Tokens(clock_.SteadyNow())) : SIZE_MAX;
    auto take = [&](auto& map, auto&& out) {
      auto it = map.find(site);
      if (it == map.end()) return;
      auto& q = it->second;
      while (room > 0 && !q.empty()) {
        out(q.front());
        q.pop_front();
        --room;
      }
      if (q.empty()) map.erase(it);
    };
    take(starved_polls_, [&](int64_t id) { polls.push_back(id); });
    take(starved_deliveries_,
         [&](const DeliveryRef& ref) { ready_deliveries_[static_cast<size_t>(ref.kind)].push_front(ref); });
    take(starved_submits_, [&](int64_t id) { submits.push_back(id); });
  }
  for (auto it = submits.rbegin(); it != submits.rend(); ++it) ready_.push_front(*it);
  for (auto it = polls.rbegin(); it != polls.rend(); ++it) ready_.push_front(*it);
}

void Engine::PublishDemand() {
  if (!BudgetOn()) return;
  std::map<std::string, int> demand;
  for (const auto& [site, q] : starved_polls_) demand[site] += static_cast<int>(q.size());
  for (const auto& [site, q] : starved_submits_) demand[site] += static_cast<int>(q.size());
  for (const auto& [site, q] : starved_deliveries_) demand[site] += static_cast<int>(q.size());
  if (demand == demand_published_) return;
  for (const auto& [site, n] : demand_published_) {
    if (!demand.count(site)) metrics_.SetCallsWaitingForTokens(site, 0);
  }
  for (const auto& [site, n] : demand) metrics_.SetCallsWaitingForTokens(site, n);
  demand_published_ = demand;
  mailbox_.SetDemand(std::move(demand));
}

void Engine::OnRateLimited(const std::string& site, const Outcome& o, TimePoint now) {
  metrics_.RateLimited(site);
  if (!BudgetOn()) return;
  SiteBudget& b = site_budget_[site];
  ++b.rate_limited_in_a_row;
  const Millis block = RateLimitBlock(o.retry_after, b.rate_limited_in_a_row);
  b.blocked_until = std::max(b.blocked_until, now + block);
  b.grants.clear();
  if (now < b.reported_until) return;  // this block was reported already: one statement per block
  b.reported_until = b.blocked_until;
  mailbox_.PushRateLimit(RateLimitReport{site, block.count(), b.sent.PerSecond(clock_.SteadyNow())});
}

void Engine::Run() {
  while (RunOnce()) {
  }
  Shutdown();
}

bool Engine::RunOnce() {
  TimePoint now = clock_.Now();
  if (plans_ != nullptr) plan_now_ = plans_->Snapshot();
  if (auto paused = mailbox_.PausedSites(); paused != paused_now_) {
    paused_now_ = std::move(paused);
    handback_paused_ = true;
  }
  for (auto& job : mailbox_.TakeJobs()) {
    if (mailbox_.stopping) {
      // Claimed while we were stopping: never sent, so back it goes, uncharged.
      const int64_t id = job.id;
      Adopt(std::move(job), now);
      HandBack(id, std::nullopt);
      continue;
    }
    Adopt(std::move(job), now);
  }
  for (auto& d : mailbox_.TakeDeliveries()) {
    const DeliveryRef ref = d.ref();
    AdoptDelivery(std::move(d));
    if (mailbox_.stopping) HandBackDelivery(ref, std::nullopt);
  }
  ApplyCancels(now);
  FireTimers(now);
  if (breaker_.Tick(now)) PublishBreaker(now);

  const bool stopping = mailbox_.stopping.load();
  if (stopping && !grace_deadline_) {
    grace_deadline_ = clock_.SteadyNow() + Millis(config_.shutdown_grace_ms);
    LogEvent(
        spdlog::level::info, "engine_stopping",
        {{"held", std::to_string(held_.size())}, {"http_in_flight", std::to_string(client_.InFlight())}});
  }
  AdoptGrants();
  if (stopping || Paused()) {
    HandBackIdle();
  } else {
    if (handback_paused_) {
      handback_paused_ = false;
      HandBackPausedSites();
    }
    RequeueStarved();
    StartReady();
  }
  PublishDemand();
  if (stopping && (client_.InFlight() == 0 || clock_.SteadyNow() >= *grace_deadline_)) return false;

  long wait_ms = 1000;
  if (breaker_.state() == BreakerState::kOpen) {
    wait_ms = std::clamp<long>(
        static_cast<long>(std::chrono::duration_cast<Millis>(breaker_.open_until() - clock_.Now()).count()),
        0, wait_ms);
  }
  if (!timers_.empty()) {
    wait_ms = std::clamp<long>(
        static_cast<long>(std::chrono::duration_cast<Millis>(timers_.top().at - clock_.Now()).count()), 0,
        1000);
  }
  // Calls held back by a 429's block go again when it ends (budgeted sites also wait for a grant).
  for (const auto& [site, b] : site_budget_) {
    if (b.blocked_until <= clock_.Now()) continue;
    const bool starved =
        starved_polls_.count(site) || starved_submits_.count(site) || starved_deliveries_.count(site);
    if (!starved) continue;
    wait_ms = std::min<long>(
        wait_ms,
        std::max<long>(0, static_cast<long>(
                              std::chrono::duration_cast<Millis>(b.blocked_until - clock_.Now()).count())));
  }
  if (stopping) wait_ms = std::min(wait_ms, 50L);
  completions_.clear();
  keys_reloaded_this_pass_ = false;
  client_.Perform(wait_ms, &completions_);
  now = clock_.Now();
  for (auto& c : completions_) OnCompletion(c, now);
  RecordNetwork(clock_.SteadyNow());
  return true;
}

void Engine::Shutdown() {
  // Calls that outlived the grace period: a poll goes back with its request_id; a submission whose
  // POST may have reached Uppzy stays held, and its lease covers it (rescue charges the attempt).
  std::vector<int64_t> rest;
  for (const auto& [id, h] : held_) {
    if (!(h.http_active && h.phase == Phase::kSubmit)) rest.push_back(id);
  }
  for (int64_t id : rest) HandBack(id, std::nullopt);
  // A rating or close still in flight is left to its lease: resending it is harmless.
  std::vector<DeliveryRef> idle_deliveries;
  for (const auto& [ref, h] : deliveries_) {
    if (!h.http_active) idle_deliveries.push_back(ref);
  }
  for (const auto& ref : idle_deliveries) HandBackDelivery(ref, std::nullopt);
  LogEvent(spdlog::level::info, "engine_stopped", {});
  mailbox_.engine_done = true;
  mailbox_.WakeDb();
}

}  // namespace uppzy::runtime
