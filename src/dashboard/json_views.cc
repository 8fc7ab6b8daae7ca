#include "dashboard/json_views.h"

#include "uppzy/job.h"

namespace uppzy::dashboard {
namespace {

json StatusOrNull(int http_status) { return http_status ? json(http_status) : json(nullptr); }

}  // namespace

json Opt(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }
json Opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }
json Opt(const std::optional<int>& v) { return v ? json(*v) : json(nullptr); }

json ParsedOr(const std::string& text, json fallback) {
  if (text.empty()) return fallback;
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json(text) : j;
}

// nlohmann::json objects keep their keys sorted, so the fields a view adds land where they belong.
json JobSummaryJson(const JobSummary& j) {
  return {{"id", j.id},
          {"job_key", Opt(j.job_key)},
          {"session_id", j.session_id},
          {"state", j.state},
          {"attempts", j.attempts},
          {"max_attempts", j.max_attempts},
          {"error_kind", Opt(j.error_kind)},
          {"last_http_status", StatusOrNull(j.last_http_status)},
          {"request_id", Opt(j.request_id)},
          {"created_at", Opt(j.created_at)},
          {"finished_at", Opt(j.finished_at)}};
}

json JobRowJson(const DashboardJobRow& j) {
  json out = JobSummaryJson(j);
  out["last_error"] = Opt(j.last_error);
  out["cancel_requested_at"] = Opt(j.cancel_requested_at);
  return out;
}

bool Finished(const std::string& state) {
  auto s = ParseJobState(state);
  return s && IsTerminal(*s);
}

json JobDetailJson(const JobDetail& j) {
  return {{"id", j.id},
          {"job_key", Opt(j.job_key)},
          {"session_id", j.session_id},
          {"response_language", j.response_language},
          {"state", j.state},
          {"priority", j.priority},
          {"attempts", j.attempts},
          {"max_attempts", j.max_attempts},
          {"request_id", Opt(j.request_id)},
          {"polls", j.polls},
          {"error_kind", Opt(j.error_kind)},
          {"last_error", Opt(j.last_error)},
          {"last_http_status", StatusOrNull(j.last_http_status)},
          {"errors", ParsedOr(j.errors_json, json::array())},
          {"metadata", ParsedOr(j.metadata_json, json::object())},
          {"result", ParsedOr(j.result_json, json(nullptr))},
          {"run_at", Opt(j.run_at)},
          {"created_at", Opt(j.created_at)},
          {"updated_at", Opt(j.updated_at)},
          {"submitted_at", Opt(j.submitted_at)},
          {"poll_deadline", Opt(j.poll_deadline)},
          {"finished_at", Opt(j.finished_at)},
          {"cancel_requested_at", Opt(j.cancel_requested_at)},
          {"locked_by", Opt(j.locked_by)},
          {"lease_expires_at", Opt(j.lease_expires_at)}};
}

json DashboardJobDetailJson(const DashboardJobDetail& j) {
  json out = JobDetailJson(j);
  json notification = nullptr;
  if (!j.notification_payload.empty()) {
    notification = {{"channel", "uppzy_chat_jobs"},
                    {"payload", ParsedOr(j.notification_payload, json(nullptr))},
                    {"text", j.notification_payload}};
  }
  out["notification"] = notification;
  out["actions"] = {{"retry", Finished(j.state)},
                    {"cancel", !Finished(j.state) && j.cancel_requested_at.empty()}};
  return out;
}

json StateCountJson(const StateCount& s) {
  return {{"state", s.state}, {"jobs", s.jobs}, {"oldest_age_seconds", Opt(s.oldest_age_seconds)}};
}

json HealthWindowJson(const HealthWindow& h) {
  return {{"period", h.period},
          {"finished", h.finished},
          {"completed", h.completed},
          {"failed", h.failed},
          {"cancelled", h.cancelled},
          {"poll_timeouts", h.poll_timeouts},
          {"timeout_rate", Opt(h.timeout_rate)},
          {"retried", h.retried},
          {"retry_rate", Opt(h.retry_rate)},
          {"p50_seconds", Opt(h.p50_seconds)},
          {"p95_seconds", Opt(h.p95_seconds)},
          {"failures_by_kind", ParsedOr(h.failures_by_kind_json, json::object())}};
}

json OverviewJson(const DashboardOverview& o) {
  json states = json::array();
  for (const auto& s : o.states) states.push_back(StateCountJson(s));
  json health = json::array();
  for (const auto& h : o.health) health.push_back(HealthWindowJson(h));
  json rows = json::array();
  for (const auto& m : o.minutes)
    rows.push_back({m.minute, m.completed, m.failed, m.cancelled, m.poll_timeouts});
  json incidents = json::array();
  for (const auto& i : o.open_incidents) {
    incidents.push_back({{"id", i.id},
                         {"kind", i.kind},
                         {"http_status", StatusOrNull(i.http_status)},
                         {"detail", Opt(i.detail)},
                         {"site_id", Opt(i.site_id)},
                         {"api_key_fingerprint", i.api_key_fingerprint},
                         {"opened_by", Opt(i.opened_by)},
                         {"opened_at", i.opened_at}});
  }
  json workers = json::array();
  for (const auto& w : o.workers) {
    workers.push_back({{"id", w.id},
                       {"host", w.host},
                       {"pid", w.pid},
                       {"version", w.version},
                       {"site_id", Opt(w.site_id)},
                       {"started_at", w.started_at},
                       {"heartbeat_at", w.heartbeat_at},
                       {"heartbeat_age_seconds", w.heartbeat_age_seconds},
                       {"lease_ms", w.lease_ms},
                       {"jobs_in_flight", w.jobs_in_flight},
                       {"breaker_state", w.breaker_state},
                       {"stopped_at", Opt(w.stopped_at)},
                       {"status", w.status}});
  }
  json feedback = json::array();
  for (const auto& f : o.feedback) {
    feedback.push_back({{"period", f.period},
                        {"delivered", f.delivered},
                        {"failed", f.failed},
                        {"good", f.good},
                        {"bad", f.bad},
                        {"good_ratio", Opt(f.good_ratio)},
                        {"pending", f.pending}});
  }
  json sites = json::array();
  for (const auto& s : o.sites) {
    sites.push_back({{"site_id", s.is_default ? json(nullptr) : json(s.site_id)},
                     {"is_default", s.is_default},
                     {"queued", s.queued},
                     {"retrying", s.retrying},
                     {"submitting", s.submitting},
                     {"polling", s.polling},
                     {"oldest_queued_age_seconds", Opt(s.oldest_queued_age_seconds)},
                     {"paused_at", Opt(s.paused_at)},
                     {"paused_reason", Opt(s.paused_reason)},
                     {"served", s.served},
                     {"open_incidents", s.open_incidents},
                     {"last_hour",
                      {{"completed", s.completed_last_hour},
                       {"poll_timeouts", s.poll_timeouts_last_hour},
                       {"status_calls_per_completed", Opt(s.status_calls_per_completed)},
                       {"seen_gap_p50_s", Opt(s.seen_gap_p50_seconds)},
                       {"seen_gap_p95_s", Opt(s.seen_gap_p95_seconds)}}},
                     {"budget",
                      {{"requests_per_s", Opt(s.requests_per_s)},
                       {"effective_rate_per_s", Opt(s.effective_rate_per_s)},
                       {"max_in_flight", Opt(s.max_in_flight)},
                       {"blocked_until", Opt(s.blocked_until)},
                       {"rate_limited", s.rate_limited},
                       {"tokens_granted", s.tokens_granted}}}});
  }
  return {{"now", o.now},
          {"states", states},
          {"health", health},
          {"finished_per_minute",
           {{"start", o.minutes_start},
            {"minutes", 1440},
            {"columns", {"minute", "completed", "failed", "cancelled", "poll_timeouts"}},
            {"rows", rows}}},
          {"incidents", incidents},
          {"workers", workers},
          {"feedback", feedback},
          {"sites", sites}};
}

json FilterJson(const DashboardJobFilter& f) {
  json j = json::object();
  if (!f.state.empty()) j["state"] = f.state;
  if (!f.error_kind.empty()) j["error_kind"] = f.error_kind;
  if (!f.job_key.empty()) j["job_key"] = f.job_key;
  if (!f.session_id.empty()) j["session_id"] = f.session_id;
  return j;
}

}  // namespace uppzy::dashboard
