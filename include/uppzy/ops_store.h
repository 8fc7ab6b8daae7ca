// What operators run against the database: the views (uppzy.chat_job_stats, uppzy.chat_job_health),
// job listings, and the operator functions (uppzy.retry_jobs, retry_failed, cancel_jobs, purge_jobs,
// resolve_incident, resolve_all_incidents) defined in migrations/0002_operations.sql. The CLI, the
// worker's metrics and retention, psql users and any dashboard all go through the same views and
// functions, so they always show the same numbers and apply the same rules.
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
  // Answer-time observations (migration 0009) of the jobs finished in the last `window`, newest first,
  // at most `limit`, of every site: what adaptive polling fits its estimates on. Reads
  // chat_jobs_finished_at_idx.
  std::vector<AnswerTimeRow> AnswerTimesRecent(std::chrono::milliseconds window, int limit);
  // The sites that set any polling setting of their own.
  std::vector<SitePolling> SitesPolling();
  // Rows of uppzy.delivery_failures (failed ratings and session closes).
  long long DeliveryFailuresCount();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
