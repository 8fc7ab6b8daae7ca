// What the web dashboard (`uppzy-worker dashboard`) reads and does. It reads the operators' views
// (uppzy.chat_job_stats, uppzy.chat_job_health, uppzy.chat_feedback_health, uppzy.site_queues,
// uppzy.site_polling_health), uppzy.incidents,
// uppzy.workers and the job columns other than the message and answer text, and it changes rows only
// through the operator functions of migrations/0002_operations.sql (uppzy.retry_jobs,
// uppzy.cancel_jobs, uppzy.resolve_incident). So it runs as a login that has only the uppzy_operator
// role, and the page, the CLI and psql always show the same numbers.
//
// A DashboardStore owns one connection and is NOT thread-safe: the dashboard keeps a small pool of
// them. Every method is its own short transaction and throws StoreError (see store.h); transient()
// says whether reconnecting may help. A StoreError whose sqlstate() starts with "22" (data exception)
// means a filter value PostgreSQL could not read: the caller's input, not the database.
//
// Timestamps are ISO 8601 UTC with milliseconds ("2024-05-01T12:00:03.123Z"), "" when NULL. Years
// outside 0000-9999 take a sign and six digits, as JavaScript's toISOString writes them: 44 BC is
// "-000043-03-15T12:00:00.000Z" (1 BC is year 0000), the year 294276 "+294276-12-31T23:59:59.999Z";
// PostgreSQL's infinite times are "infinity" and "-infinity".
//
// Bounded reads. However large a job's values are (rows from before migrations/0007_input_limits.sql,
// a 1 MiB answer, a long history), one job read by this class stays small (tens of KiB): the
// statements cut the values down in SQL, so the whole value never reaches this process. A value whose
// text is larger than kDashboardValueMaxBytes (16 KiB) comes back as
//   metadata, result:  {"truncated": true, "bytes": <bytes of the text>, "preview": <first 4,096
//                      characters of the text>, "full_value": "uppzy-worker show <id> --json"}
//   errors:            the newest entries within 16 KiB, oldest first, after one entry
//                      {"kind": "truncated", "truncated": true, "omitted": <older entries left out>,
//                       "entries": <all>, "bytes": <...>, "message": "...", "full_value": "..."};
//                      an entry above 4 KiB is cut down to its kind, at, attempt, http_status and the
//                      first 1,024 characters of its message, with "truncated": true and "bytes"
//   message, answer:   their first 4,096 characters, then "\n… [truncated by the dashboard: N bytes in
//                      all; uppzy-worker show <id> --show-text prints it whole]"
//   last_error:        above 4 KiB, its first 1,024 characters and a like note
//   request_id, locked_by: above 1 KiB, their first 256 characters and "…".
// `uppzy-worker show <id> --json` (OpsStore) prints every value whole.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "uppzy/ops_store.h"

namespace uppzy {

// Above this many bytes of text, a job's metadata, result, errors, message or answer is cut down (see
// the top of this file). The number is in the SQL of src/store/queries_dashboard.h; this constant
// documents it for callers and tests.
inline constexpr int kDashboardValueMaxBytes = 16384;

// Filters of the jobs listing. Empty strings and nullopt mean "any". Values are matched exactly;
// the caller validates state and error_kind against the known names.
struct DashboardJobFilter {
  std::string state;
  std::string error_kind;
  std::string job_key;
  std::string session_id;
  std::optional<int64_t> since_us;  // created_at >= since (microseconds since the Unix epoch)
  std::optional<int64_t> until_us;  // created_at < until
  bool empty() const {
    return state.empty() && error_kind.empty() && job_key.empty() && session_id.empty() && !since_us &&
           !until_us;
  }
};

// Where a page of the listing starts: after the row with this (created_at, id), newest first.
struct DashboardJobCursor {
  int64_t created_us = 0;  // created_at in microseconds since the Unix epoch
  int64_t id = 0;
};

struct DashboardJobRow : JobSummary {
  std::string last_error;
  std::string cancel_requested_at;
  int64_t created_us = 0;
};

// One job as the job page shows it: every column but message and answer, and the payload of the finish
// notification (NOTIFY uppzy_chat_jobs) built the way the trigger builds it; "" while unfinished.
struct DashboardJobDetail : JobDetail {
  std::string notification_payload;
};

struct DashboardJobPage {
  std::vector<DashboardJobRow> jobs;
  std::optional<DashboardJobCursor> next;  // set when more rows may follow
};

struct DashboardIncident {
  int64_t id = 0;
  std::string kind;
  int http_status = 0;  // 0 when NULL
  std::string detail;
  std::string site_id;
  std::string api_key_fingerprint;  // 12 hex digits of SHA-256(key); never the key
  std::string opened_by;
  std::string opened_at;
  std::string resolved_at;
};

// One row of uppzy.workers. status: "alive" (heartbeat within its lease), "gone" (heartbeat older
// than the lease, not stopped: crashed or cut off) or "stopped" (exited cleanly).
struct DashboardWorker {
  std::string id;
  std::string host;
  int pid = 0;
  std::string version;
  std::string site_id;
  std::string started_at;
  std::string heartbeat_at;
  double heartbeat_age_seconds = 0;
  int lease_ms = 0;
  int jobs_in_flight = 0;
  std::string breaker_state;
  std::string stopped_at;
  std::string status;
};

// One row of uppzy.chat_feedback_health.
struct DashboardFeedbackWindow {
  std::string period;
  long long delivered = 0;
  long long failed = 0;
  long long good = 0;
  long long bad = 0;
  std::optional<double> good_ratio;
  long long pending = 0;
};

// Jobs finished in one minute of the last 24 hours.
struct DashboardMinute {
  int minute = 0;  // 0 .. 1439, from DashboardOverview::minutes_start
  long long completed = 0;
  long long failed = 0;
  long long cancelled = 0;
  long long poll_timeouts = 0;  // of those, how many hit poll_timeout at least once
};

// One row of uppzy.site_queues (the default site, then each row of uppzy.sites), with that site's row
// of uppzy.site_polling_health (jobs finished in the last hour) and its open incidents.
struct DashboardSite {
  std::string site_id;  // "" for the default site
  bool is_default = false;
  long long queued = 0;
  long long retrying = 0;
  long long submitting = 0;
  long long polling = 0;
  std::optional<double> oldest_queued_age_seconds;  // nullopt: nothing queued or retrying
  std::string paused_at;                            // "" when not paused
  std::string paused_reason;
  bool served = false;  // some live worker claims this site's work
  long long open_incidents = 0;
  long long completed_last_hour = 0;
  long long poll_timeouts_last_hour = 0;
  std::optional<double> status_calls_per_completed;
  std::optional<double> seen_gap_p50_seconds;
  std::optional<double> seen_gap_p95_seconds;
  // The shared request budget (uppzy.site_limits).
  std::optional<double> requests_per_s;        // configured limit; nullopt: none
  std::optional<double> effective_rate_per_s;  // in force now (after 429s); nullopt: no limit at all
  std::string blocked_until;                   // "" when no 429 blocks the site now
  long long rate_limited = 0;                  // 429s reported by workers
  long long tokens_granted = 0;
  std::optional<double> max_in_flight;
};

// Everything on the overview page, read in one snapshot.
struct DashboardOverview {
  std::string now;
  std::vector<StateCount> states;
  std::vector<HealthWindow> health;
  std::string minutes_start;             // the first of 1440 minutes; the last is the current one
  std::vector<DashboardMinute> minutes;  // only minutes with finished jobs, in order
  std::vector<DashboardIncident> open_incidents;
  std::vector<DashboardWorker> workers;  // not stopped, or stopped within the last hour; newest first
  std::vector<DashboardFeedbackWindow> feedback;
  std::vector<DashboardSite> sites;  // at most 200, the default site first, then by site_id
};

class DashboardStore {
 public:
  // Connects at once. Throws StoreError (transient) when the database cannot be reached.
  explicit DashboardStore(const std::string& database_url);
  ~DashboardStore();
  DashboardStore(const DashboardStore&) = delete;
  DashboardStore& operator=(const DashboardStore&) = delete;

  // The overview, in one read-only REPEATABLE READ transaction (one snapshot: the numbers agree).
  // `full` false reads only the parts that stay cheap however large the table is: the unfinished
  // states' counts, open incidents, workers and feedback (no finished counts, health, chart or sites).
  DashboardOverview OverviewRead(bool full = true);

  // Up to `limit` jobs matching `filter`, newest first (created_at DESC, id DESC), after `after`.
  DashboardJobPage JobsPage(const DashboardJobFilter& filter, const std::optional<DashboardJobCursor>& after,
                            int limit);
  // Every column but message and answer, large values cut down (see the top); nullopt when no job
  // has this id.
  std::optional<DashboardJobDetail> JobsGet(int64_t id);
  // The message and answer text (answer nullopt when NULL), each cut down above 16 KiB (see the
  // top); nullopt when no job has this id. Needs
  // SELECT on those columns: as uppzy_operator it throws StoreError with sqlstate 42501.
  std::optional<std::pair<std::string, std::optional<std::string>>> JobsText(int64_t id);

  // uppzy.retry_jobs: finished jobs among `ids` back to queued; returns how many.
  int JobsRetry(const std::vector<int64_t>& ids);
  // uppzy.cancel_jobs: returns how many unfinished jobs among `ids` were cancelled or asked to cancel.
  int JobsCancel(const std::vector<int64_t>& ids);
  // The same for every job matching `filter` (at most `cap` of them, newest first): retry takes the
  // finished ones, cancel the unfinished ones. Returns how many were changed.
  int JobsRetryMatching(const DashboardJobFilter& filter, int cap);
  int JobsCancelMatching(const DashboardJobFilter& filter, int cap);

  enum class ResolveResult { kResolved, kAlreadyResolved, kNotFound };
  // uppzy.resolve_incident.
  ResolveResult IncidentsResolve(int64_t id);

  // SELECT 1: for /healthz-style checks of the connection.
  void Ping();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
