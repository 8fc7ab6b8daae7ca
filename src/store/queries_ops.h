// The operator statements (OpsStore), one named query each. They read the views and call the
// functions of migrations/0002_operations.sql; none selects the message or answer text except
// kOpsJobsGetText. Timestamps come back as text in UTC (the connection sets TIME ZONE 'UTC').
#pragma once

namespace uppzy::store::sql {

// Operator reads are a few index scans: parallel workers would only add their start-up cost (8 ms
// instead of 0.6 ms for the gauges' query on a table of a million finished rows).
inline constexpr const char* kOpsSession = "SET TIME ZONE 'UTC'; SET max_parallel_workers_per_gather = 0";

inline constexpr const char* kOpsStats = R"sql(
SELECT state, jobs, extract(epoch FROM oldest_age)::float8 FROM uppzy.chat_job_stats
)sql";

// Reads only the branches of the view for unfinished states (each an index-only scan of the small
// partial index chat_jobs_active_state_idx).
inline constexpr const char* kOpsStatsUnfinished = R"sql(
SELECT state, jobs, extract(epoch FROM oldest_age)::float8 FROM uppzy.chat_job_stats
WHERE state IN ('queued', 'submitting', 'polling', 'retrying')
)sql";

inline constexpr const char* kOpsHealth = R"sql(
SELECT period, finished, completed, failed, cancelled, poll_timeouts, timeout_rate::float8, retried,
       retry_rate::float8, p50_seconds::float8, p95_seconds::float8, failures_by_kind::text,
       coalesce(feedback_delivered, 0), coalesce(feedback_failed, 0), coalesce(feedback_good, 0),
       coalesce(feedback_bad, 0), feedback_good_ratio::float8
FROM uppzy.chat_job_health
)sql";
inline constexpr const char* kOpsDeliveryFailures = "SELECT count(*) FROM uppzy.delivery_failures";

// $1 state ('' = any), $2 error_kind ('' = any), $3 since in seconds (< 0 = any time), $4 limit.
inline constexpr const char* kOpsJobsList = R"sql(
SELECT id, job_key, session_id, state, attempts, max_attempts, error_kind, last_http_status, request_id,
       created_at, finished_at
FROM uppzy.chat_jobs
WHERE ($1 = '' OR state = $1)
  AND ($2 = '' OR error_kind = $2)
  AND ($3::bigint < 0 OR coalesce(finished_at, created_at) >= now() - $3::bigint * interval '1 second')
ORDER BY id DESC
LIMIT $4
)sql";

// $1 id. Every column but message and answer; the first eleven as in kOpsJobsList.
inline constexpr const char* kOpsJobsGet = R"sql(
SELECT id, job_key, session_id, state, attempts, max_attempts, error_kind, last_http_status, request_id,
       created_at, finished_at,
       response_language, priority, polls, run_at, updated_at, submitted_at, poll_deadline, locked_by,
       lease_expires_at, cancel_requested_at, last_error, errors, metadata, result
FROM uppzy.chat_jobs WHERE id = $1
)sql";

// $1 id. Needs SELECT on message and answer (uppzy_operator does not have it).
inline constexpr const char* kOpsJobsGetText = "SELECT message, answer FROM uppzy.chat_jobs WHERE id = $1";

// $1 bigint[] ids.
inline constexpr const char* kOpsJobsStates =
    "SELECT id, state FROM uppzy.chat_jobs WHERE id = ANY ($1::bigint[]) ORDER BY id";

// $1 bigint[] ids.
inline constexpr const char* kOpsJobsRetry = "SELECT uppzy.retry_jobs($1::bigint[])";
// $1 error_kind ('' = any), $2 since in seconds (< 0 = any time).
inline constexpr const char* kOpsJobsRetryFailed = R"sql(
SELECT uppzy.retry_failed(nullif($1, ''),
                          CASE WHEN $2::bigint < 0 THEN NULL ELSE $2::bigint * interval '1 second' END)
)sql";
// $1 bigint[] ids.
inline constexpr const char* kOpsJobsCancel = "SELECT uppzy.cancel_jobs($1::bigint[])";
// $1 state, $2 older than (seconds), $3 batch size.
inline constexpr const char* kOpsJobsPurge =
    "SELECT uppzy.purge_jobs($1, $2::bigint * interval '1 second', $3::integer)";

inline constexpr const char* kOpsIncidentsResolve = "SELECT uppzy.resolve_incident($1::bigint)";
inline constexpr const char* kOpsIncidentsResolveAll = "SELECT uppzy.resolve_all_incidents()";
inline constexpr const char* kOpsIncidentsOpenCount =
    "SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL";

// $1 window ms, $2 limit, $3 settle ms. The jobs *submitted* in the window that ends $3 ago (by then
// every one of them has its outcome: $3 is at least the poll timeout), newest submission first. Chosen
// by submission, not by finish: the newest finished jobs of a burst are its slowest answers, and an
// estimate fitted on them would think the vendor slower than it is. finished_at > window start - settle
// (with the finished states) bounds the read to a range of chat_jobs_finished_time_idx (0011).
inline constexpr const char* kOpsAnswerTimesRecent = R"sql(
SELECT answer_ready_after_ms, answer_seen_after_ms, coalesce(site_id, '')
FROM uppzy.chat_jobs
WHERE finished_at > now() - ($1::bigint + $3::bigint) * interval '1 millisecond'
  AND phase IN ('completed', 'failed', 'cancelled')
  AND submitted_at > now() - ($1::bigint + $3::bigint) * interval '1 millisecond'
  AND submitted_at <= now() - $3::bigint * interval '1 millisecond'
  AND answer_ready_after_ms IS NOT NULL
ORDER BY submitted_at DESC
LIMIT $2
)sql";

inline constexpr const char* kOpsSitesPolling = R"sql(
SELECT site_id, poll_interval_ms, poll_timeout_ms, poll_mode, poll_target_delay_ms
FROM uppzy.sites
WHERE poll_interval_ms IS NOT NULL OR poll_timeout_ms IS NOT NULL OR poll_mode IS NOT NULL
   OR poll_target_delay_ms IS NOT NULL
)sql";

// Sites (migrations/0008_sites.sql). Every statement that returns a row of uppzy.sites returns the same
// ten columns first, in this order (ReadSiteRow reads them; poll_mode and poll_target_delay_ms: 0009).
#define UPPZY_SITE_COLUMNS                                                                                \
  "site_id, requests_per_s::float8, burst, max_in_flight, poll_interval_ms, poll_timeout_ms, paused_at, " \
  "paused_reason, poll_mode, poll_target_delay_ms"

// uppzy.site_queues (the default site, site_id NULL, first) with each site's settings; then is_default,
// queued, retrying, submitting, polling, oldest queued age in seconds, served; then the shared budget
// (uppzy.site_limits, 0010): effective rate, blocked_until, 429s, tokens granted; open incidents.
inline constexpr const char* kOpsSitesList = R"sql(
SELECT q.site_id, s.requests_per_s::float8, s.burst, s.max_in_flight, s.poll_interval_ms, s.poll_timeout_ms,
       q.paused_at, q.paused_reason, s.poll_mode, s.poll_target_delay_ms,
       q.is_default, q.queued, q.retrying, q.submitting, q.polling,
       extract(epoch FROM q.oldest_queued_age)::float8, q.served,
       l.effective_rate_per_s::float8, l.blocked_until, coalesce(l.rate_limited, 0),
       coalesce(l.tokens_granted, 0), coalesce(i.open_incidents, 0)
FROM uppzy.site_queues q
LEFT JOIN uppzy.sites s ON s.site_id = q.site_id
LEFT JOIN uppzy.site_limits l ON l.site_id = q.site_id
LEFT JOIN (SELECT s.site_id, count(*) AS open_incidents  -- a site without a row: the default site's
           FROM uppzy.incidents n LEFT JOIN uppzy.sites s ON s.site_id = n.site_id
           WHERE n.resolved_at IS NULL GROUP BY s.site_id) i
       ON i.site_id IS NOT DISTINCT FROM q.site_id
ORDER BY q.site_id NULLS FIRST
)sql";

// The worker's gauges in one statement (migrations/0014_shared_gauges.sql). $1 worker id, $2 whether
// this connection already holds the gauges lock, $3 how old (ms) a stored count may be. A connection
// that holds the lock (or takes it now, or finds the stored counts older than $3) counts the
// unfinished jobs and stores them in uppzy.queue_gauges; any other reads that row. Returns one row:
// leads (holds the lock), the counts as JSON [[site_id, state, jobs, oldest
// created_at as epoch seconds], ...], the database's now as epoch seconds, the open incidents, and
// per site (null first, then every row of uppzy.sites) its open incidents as JSON [[site_id, open],
// ...] (incidents of a site without an uppzy.sites row count as the default site's).
inline constexpr const char* kOpsGaugesShared = R"sql(
WITH l AS MATERIALIZED (
  SELECT CASE WHEN $2::boolean THEN true ELSE pg_try_advisory_lock(uppzy.gauges_lock_key()) END AS leads
), g AS MATERIALIZED (
  SELECT counts, computed_at FROM uppzy.queue_gauges WHERE id
), need AS MATERIALIZED (
  SELECT l.leads OR NOT EXISTS (
           SELECT 1 FROM g WHERE g.computed_at >= now() - $3::bigint * interval '1 millisecond') AS count_now
  FROM l
), c AS MATERIALIZED (
  SELECT coalesce(jsonb_agg(jsonb_build_array(site_id, state, jobs, oldest)), '[]'::jsonb) AS counts
  FROM (SELECT j.site_id, j.state, count(*) AS jobs, extract(epoch FROM min(j.created_at))::float8 AS oldest
        FROM uppzy.chat_jobs j
        WHERE j.phase IN ('queued', 'held', 'retrying') AND (SELECT count_now FROM need)
        GROUP BY j.site_id, j.state) q
), w AS (
  INSERT INTO uppzy.queue_gauges AS t (id, computed_at, computed_by, counts)
  SELECT true, now(), $1, c.counts FROM c, need WHERE need.count_now
  ON CONFLICT (id) DO UPDATE
  SET computed_at = EXCLUDED.computed_at, computed_by = EXCLUDED.computed_by, counts = EXCLUDED.counts
), i AS (
  SELECT s.site_id, count(*) AS open_incidents
  FROM uppzy.incidents n LEFT JOIN uppzy.sites s ON s.site_id = n.site_id
  WHERE n.resolved_at IS NULL GROUP BY s.site_id
)
SELECT l.leads,
       (CASE WHEN need.count_now THEN c.counts ELSE (SELECT counts FROM g) END)::text,
       extract(epoch FROM now())::float8,
       (SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL),
       (SELECT jsonb_agg(jsonb_build_array(k.site_id, coalesce(i.open_incidents, 0)) ORDER BY k.site_id NULLS FIRST)
        FROM (SELECT NULL::text AS site_id UNION ALL SELECT site_id FROM uppzy.sites) k
        LEFT JOIN i ON i.site_id IS NOT DISTINCT FROM k.site_id)::text
FROM l, need, c
)sql";

// $1 site_id. The row as it is before a change, locked until the change commits.
inline constexpr const char* kOpsSitesGetForUpdate = R"sql(
SELECT )sql" UPPZY_SITE_COLUMNS R"sql(
FROM uppzy.sites WHERE site_id = $1 FOR UPDATE
)sql";

// $1 site_id; then for each setting a boolean (given) and its value (NULL: none): $2 $3 requests_per_s,
// $4 $5 burst, $6 $7 max_in_flight, $8 $9 poll_interval_ms, $10 $11 poll_timeout_ms, $12 $13 poll_mode,
// $14 $15 poll_target_delay_ms. A setting not given keeps its value (a new row: NULL). float8 ->
// numeric keeps 0.1 as 0.1.
inline constexpr const char* kOpsSitesSet = R"sql(
INSERT INTO uppzy.sites AS s (site_id, requests_per_s, burst, max_in_flight, poll_interval_ms, poll_timeout_ms,
                              poll_mode, poll_target_delay_ms)
VALUES ($1, $3::float8::numeric, $5::integer, $7::integer, $9::integer, $11::integer, $13::text, $15::integer)
ON CONFLICT (site_id) DO UPDATE SET
  requests_per_s = CASE WHEN $2::boolean THEN EXCLUDED.requests_per_s ELSE s.requests_per_s END,
  burst = CASE WHEN $4::boolean THEN EXCLUDED.burst ELSE s.burst END,
  max_in_flight = CASE WHEN $6::boolean THEN EXCLUDED.max_in_flight ELSE s.max_in_flight END,
  poll_interval_ms = CASE WHEN $8::boolean THEN EXCLUDED.poll_interval_ms ELSE s.poll_interval_ms END,
  poll_timeout_ms = CASE WHEN $10::boolean THEN EXCLUDED.poll_timeout_ms ELSE s.poll_timeout_ms END,
  poll_mode = CASE WHEN $12::boolean THEN EXCLUDED.poll_mode ELSE s.poll_mode END,
  poll_target_delay_ms = CASE WHEN $14::boolean THEN EXCLUDED.poll_target_delay_ms ELSE s.poll_target_delay_ms END
RETURNING )sql" UPPZY_SITE_COLUMNS;

// $1 site_id, $2 reason (NULL: keep the current one). An existing pause keeps its paused_at.
inline constexpr const char* kOpsSitesPause = R"sql(
INSERT INTO uppzy.sites AS s (site_id, paused_at, paused_reason) VALUES ($1, now(), $2)
ON CONFLICT (site_id) DO UPDATE SET
  paused_at = coalesce(s.paused_at, EXCLUDED.paused_at),
  paused_reason = coalesce(EXCLUDED.paused_reason, s.paused_reason)
RETURNING )sql" UPPZY_SITE_COLUMNS;

// $1 site_id. No row: no such site.
inline constexpr const char* kOpsSitesResume = R"sql(
UPDATE uppzy.sites SET paused_at = NULL, paused_reason = NULL WHERE site_id = $1
RETURNING )sql" UPPZY_SITE_COLUMNS;

inline constexpr const char* kOpsSitesPollingHealth = R"sql(
SELECT site_id, completed, poll_timeouts, status_calls_per_completed::float8, seen_gap_p50_s::float8,
       seen_gap_p95_s::float8, answer_seen_p50_s::float8
FROM uppzy.site_polling_health
ORDER BY site_id NULLS FIRST
)sql";

// The embedded, unnumbered file that `migrate --with-roles` runs (under the migrations' lock).
inline constexpr const char* kOpsRolesFile = "roles.sql";

}  // namespace uppzy::store::sql
