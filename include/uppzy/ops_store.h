// What operators run against the database: the views (uppzy.chat_job_stats, uppzy.chat_job_health,
// uppzy.site_queues), job listings, the rows of uppzy.sites, and the operator functions (uppzy.retry_jobs,
// retry_failed, cancel_jobs, purge_jobs, resolve_incident, resolve_all_incidents) defined in
// migrations/0002_operations.sql. The CLI, the worker's metrics and retention, psql users and any dashboard
// all go through the same views and functions, so they always show the same numbers and apply the same rules.
//
// An OpsStore owns one connection and is NOT thread-safe. Every method is its own short transaction
// and throws StoreError (see store.h); transient() says whether reconnecting may help.
//
// Reads never select the message or answer text unless asked (JobsGet with_text), so an operator role
// without access to those columns (uppzy_operator) can use everything else.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uppzy/store.h"

namespace uppzy {

// One row of uppzy.chat_job_stats.
struct StateCount {
  std::string state;
  long long jobs = 0;
  // now() - created_at of the oldest unfinished job, or now() - finished_at of the oldest finished
  // one; nullopt when no job is in this state.
  std::optional<double> oldest_age_seconds;
};

// One row of uppzy.chat_job_health.
// One finished job's answer-time observation: the answer became ready after ready_after_ms and at most
// seen_after_ms after its acceptance; no seen_after_ms when its polls ran out.
struct AnswerTimeRow {
  int ready_after_ms = 0;
  std::optional<int> seen_after_ms;
  std::string site_id;  // "" for a job without one (the default site of whoever served it)
};

// A site's own polling settings (uppzy.sites; NULL: the worker's setting).
struct SitePolling {
  std::string site_id;
  std::optional<int> poll_interval_ms;
  std::optional<int> poll_timeout_ms;
  std::optional<std::string> poll_mode;  // "fixed" or "adaptive"
  std::optional<int> poll_target_delay_ms;
};

// One row of uppzy.site_polling_health: a site's polling over the jobs finished in the last hour.
struct SitePollingHealth {
  std::optional<std::string> site_id;  // none: the default site's rows (site_id NULL)
  long long completed = 0;
  long long poll_timeouts = 0;
  std::optional<double> status_calls_per_completed;
  std::optional<double> seen_gap_p50_s;  // the most an answer waited for the poll that found it
  std::optional<double> seen_gap_p95_s;
  std::optional<double> answer_seen_p50_s;  // submission accepted -> answer found
};

struct HealthWindow {
  std::string period;  // "1 hour" or "24 hours"
  long long finished = 0;
  long long completed = 0;
  long long failed = 0;
  long long cancelled = 0;
  long long poll_timeouts = 0;
  std::optional<double> timeout_rate;  // nullopt when nothing finished
  long long retried = 0;
  std::optional<double> retry_rate;
  std::optional<double> p50_seconds;  // of completed jobs, created_at to finished_at
  std::optional<double> p95_seconds;
  std::string failures_by_kind_json = "{}";  // {"server_error": 3, ...}
  // Ratings (uppzy.chat_feedback) in the same window.
  long long feedback_delivered = 0;
  long long feedback_failed = 0;
  long long feedback_good = 0;
  long long feedback_bad = 0;
  std::optional<double> feedback_good_ratio;  // good / (good + bad); nullopt when none
};

struct JobFilter {
  std::string state;       // "" = any
  std::string error_kind;  // "" = any
  // Only jobs finished (or, when unfinished, created) within this long; nullopt = any time.
  std::optional<std::chrono::seconds> since;
  int limit = 50;
};

// A job without its message and answer text. Timestamps are ISO 8601 UTC ("" when NULL).
struct JobSummary {
  int64_t id = 0;
  std::string job_key;
  std::string session_id;
  std::string state;
  int attempts = 0;
  int max_attempts = 0;
  std::string error_kind;
  int last_http_status = 0;  // 0 when NULL
  std::string request_id;
  std::string created_at;
  std::string finished_at;
};

struct JobDetail : JobSummary {
  std::string response_language;
  int priority = 0;
  int polls = 0;
  std::string run_at;
  std::string updated_at;
  std::string submitted_at;
  std::string poll_deadline;
  std::string locked_by;
  std::string lease_expires_at;
  std::string cancel_requested_at;
  std::string last_error;
  std::string errors_json = "[]";  // the full history, oldest first
  std::string metadata_json = "{}";
  std::string result_json;  // "" when NULL
  // Only when asked for (JobsGet with_text); need SELECT on the message and answer columns.
  std::optional<std::string> message;
  std::optional<std::string> answer;
};

// The settings of one uppzy.sites row (migrations/0008_sites.sql); nullopt is NULL: no limit, or the
// worker's own setting.
struct SiteSettings {
  std::optional<double> requests_per_s;     // > 0 and finite (sites_requests_per_s_positive)
  std::optional<int> burst;                 // >= 1 (sites_burst_positive)
  std::optional<int> max_in_flight;         // >= 1 (sites_max_in_flight_positive)
  std::optional<int> poll_interval_ms;      // 10 to 600000 (sites_poll_interval_range)
  std::optional<int> poll_timeout_ms;       // 100 to 3600000 (sites_poll_timeout_range)
  std::optional<std::string> poll_mode;     // "fixed" or "adaptive" (sites_poll_mode_valid)
  std::optional<int> poll_target_delay_ms;  // 100 to 600000 (sites_poll_target_delay_range)
};

// One row of uppzy.sites. Timestamps are ISO 8601 UTC ("" when NULL).
struct SiteRow {
  std::string site_id;  // "" only for the default site in SiteStatus
  SiteSettings settings;
  std::string paused_at;      // "" when not paused
  std::string paused_reason;  // "" when none
};

// One row of uppzy.site_queues with its site's settings (SitesList).
struct SiteStatus {
  bool is_default = false;  // the jobs with no site_id (each worker's UPPZY_SITE_ID); no uppzy.sites row
  SiteRow site;             // settings all nullopt and no pause for the default site
  long long queued = 0;
  long long retrying = 0;
  long long submitting = 0;
  long long polling = 0;
  std::optional<double> oldest_queued_age_s;  // of the oldest queued or retrying job; nullopt when none
  bool served = false;                        // some live worker claims this site's work
  // The shared request budget (uppzy.site_limits).
  std::optional<double> effective_rate_per_s;  // the rate in force now; nullopt: no limit
  std::string blocked_until;                   // ISO 8601; "" when no 429 blocks the site now
  long long rate_limited = 0;                  // 429s reported by workers
  long long tokens_granted = 0;
  long long open_incidents = 0;  // open incidents naming this site
};

// What SitesSet changes, per setting: nullopt leaves it as it is; a value, or NULL (an empty inner
// optional), replaces it.
struct SiteSettingsChange {
  std::optional<std::optional<double>> requests_per_s;
  std::optional<std::optional<int>> burst;
  std::optional<std::optional<int>> max_in_flight;
  std::optional<std::optional<int>> poll_interval_ms;
  std::optional<std::optional<int>> poll_timeout_ms;
  std::optional<std::optional<std::string>> poll_mode;
  std::optional<std::optional<int>> poll_target_delay_ms;
};

// A site's row before and after a change (SitesSet, SitesPause, SitesResume).
struct SiteChange {
  std::optional<SiteRow> before;  // nullopt: there was no row; the change created it
  SiteRow after;
};

// What a worker's gauges show (OpsStore::Gauges): unfinished jobs by state, open incidents, and per
// site the unfinished jobs and open incidents.
struct WorkerGauges {
  std::vector<StateCount> states;  // queued, submitting, polling, retrying: always all four
  long long open_incidents = 0;
  std::vector<SiteStatus> sites;
  bool leads = false;  // this connection holds the gauges lock: it counts for every worker
};

class OpsStore {
 public:
  // Connects at once. Throws StoreError (transient) when the database cannot be reached.
  explicit OpsStore(const std::string& database_url);
  ~OpsStore();
  OpsStore(const OpsStore&) = delete;
  OpsStore& operator=(const OpsStore&) = delete;

  // Runs migrations/roles.sql (embedded; not a numbered migration): creates the NOLOGIN roles
  // uppzy_app, uppzy_operator and uppzy_worker if missing and resets their privileges in this
  // database. Idempotent. Needs the numbered migrations applied and a user allowed to CREATE ROLE.
  void RolesApply();

  // uppzy.chat_job_stats, in state order. `unfinished_only` reads only queued, submitting, polling
  // and retrying (cheap whatever the number of finished rows: the metrics gauges use it).
  std::vector<StateCount> StatsByState(bool unfinished_only = false);
  // uppzy.chat_job_health: "1 hour", then "24 hours".
  std::vector<HealthWindow> HealthWindows();
  // uppzy.site_polling_health (migration 0009), the default site first.
  std::vector<SitePollingHealth> SitesPollingHealth();
  // Newest first.
  std::vector<JobSummary> JobsList(const JobFilter& filter);
  // nullopt when no job has this id.
  std::optional<JobDetail> JobsGet(int64_t id, bool with_text);
  // The state of each listed id that exists (missing ids are absent from the map).
  std::map<int64_t, std::string> JobsStates(const std::vector<int64_t>& ids);

  // uppzy.retry_jobs: finished jobs among `ids` back to queued; returns how many.
  int JobsRetry(const std::vector<int64_t>& ids);
  // uppzy.retry_failed: failed jobs, optionally of one error_kind ("" = any) and finished within
  // `since`; returns how many were requeued.
  int JobsRetryFailed(const std::string& error_kind, std::optional<std::chrono::seconds> since);
  // uppzy.cancel_jobs: returns how many unfinished jobs were cancelled or asked to cancel.
  int JobsCancel(const std::vector<int64_t>& ids);
  // uppzy.purge_jobs: deletes one batch of `state` rows finished more than `older_than` ago.
  int JobsPurge(const std::string& state, std::chrono::seconds older_than, int batch_size);

  // uppzy.resolve_incident: false when no open incident has this id.
  bool IncidentsResolve(int64_t id);
  // uppzy.resolve_all_incidents: returns how many were open.
  int IncidentsResolveAll();
  long long IncidentsOpenCount();
  // Answer-time observations (migration 0009) of the jobs submitted in the `window` that ended `settle`
  // ago (at least the poll timeout, so every one of them has its outcome; a sample by finish time
  // would favour slow answers), newest submission first, at most `limit`, of every site: what adaptive
  // polling fits its estimates on. Reads a range of chat_jobs_finished_time_idx.
  std::vector<AnswerTimeRow> AnswerTimesRecent(
      std::chrono::milliseconds window, int limit,
      std::chrono::milliseconds settle = std::chrono::milliseconds(0));
  // The sites that set any polling setting of their own.
  std::vector<SitePolling> SitesPolling();
  // Rows of uppzy.delivery_failures (failed ratings and session closes).
  long long DeliveryFailuresCount();

  // Sites. `site_id` must be valid by the rule of UPPZY_SITE_ID: callers check ValidSiteId (config.h)
  // first, as the CLI does; the named CHECK constraint sites_site_id_valid refuses the rest. A value
  // outside a setting's range is refused by its named constraint (see SiteSettings): StoreError, not
  // transient, sqlstate 23514, what() naming the constraint, and nothing is changed.
  //
  // uppzy.site_queues joined with uppzy.sites: the default site first, then every site by site_id.
  std::vector<SiteStatus> SitesList();
  // What the worker's gauges show, in one statement (an idle worker's every transaction counts):
  // the unfinished jobs by state (with the oldest queued age) and per site (is_default for the
  // NULL-site jobs, then every row of uppzy.sites; other fields empty), and the open incidents, in all
  // and per site. Counting the unfinished jobs reads every such row, so one worker counts for all
  // (migrations/0014_shared_gauges.sql): the connection holding the session advisory lock
  // uppzy.gauges_lock_key() counts and stores the counts in uppzy.queue_gauges; this call takes the
  // lock when it is free and keeps it for the connection's life. Other connections read the stored
  // counts, and count (and store) themselves when those are older than `fresh_for`. `worker_id` goes
  // into computed_by. Incidents are read every call. Needs migration 0014.
  WorkerGauges Gauges(const std::string& worker_id, std::chrono::milliseconds fresh_for);
  // INSERT ... ON CONFLICT (site_id) DO UPDATE of only the settings `change` gives; a new row gets
  // NULL for the others. One transaction.
  SiteChange SitesSet(const std::string& site_id, const SiteSettingsChange& change);
  // Pauses a site: paused_at = now() unless it is already paused (then the pause keeps its start), and
  // paused_reason = `reason` when given (otherwise the current reason stays). Creates the row of an
  // unknown site, so a site can be paused before its first job. At most 500 characters of reason
  // (sites_paused_reason_length).
  SiteChange SitesPause(const std::string& site_id, const std::optional<std::string>& reason);
  // Clears paused_at and paused_reason. nullopt when uppzy.sites has no such site.
  std::optional<SiteChange> SitesResume(const std::string& site_id);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
