// The dashboard's statements (DashboardStore), one named query each. They read the operators' views,
// uppzy.incidents, uppzy.workers and the job columns other than message and answer, and change rows
// only through the operator functions of migrations/0002_operations.sql, so a login with only the
// uppzy_operator role runs all of them (except kDashJobsText, which needs the text columns).
// Timestamps come back as text in UTC (the connection sets TIME ZONE 'UTC' and DateStyle ISO).
//
// Bounds: a job's metadata, result, errors, answer and message, and its last_error, request_id and
// locked_by, may be megabytes (rows from before migrations/0007_input_limits.sql, answers as large as
// UPPZY_MAX_RESPONSE_BYTES, a long history). The queries below cut them down in SQL, so the dashboard
// process never receives more than a bounded amount of any one value (see dashboard_store.h for the
// shapes); `uppzy-worker show ID --json` (and --show-text) reads them whole.
#pragma once

namespace uppzy::store::sql {

// No parallel query: the overview's per-minute chart of a million rows otherwise picked a parallel
// sequential scan of the whole table (three processes, 338 ms) over a bitmap scan of
// chat_jobs_finished_time_idx (one process, 194 ms) once fillfactor 50 (0012) made the heap larger.
// Every other dashboard read is an index scan that parallel workers only slow down (see kOpsSession).
inline constexpr const char* kDashSession =
    "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET max_parallel_workers_per_gather = 0";

// ---- Overview: one REPEATABLE READ snapshot, so now() is the same in every statement. -----------

// now(), and the first of the 1,440 minutes of the chart (the last one is the current minute).
inline constexpr const char* kDashOverviewClock =
    "SELECT now(), date_trunc('minute', now()) - interval '1439 minutes'";

inline constexpr const char* kDashOverviewStates = R"sql(
SELECT state, jobs, extract(epoch FROM oldest_age)::float8 FROM uppzy.chat_job_stats
)sql";

// The branches of the view for unfinished states only (index-only scans of a small partial index).
inline constexpr const char* kDashOverviewStatesUnfinished = R"sql(
SELECT state, jobs, extract(epoch FROM oldest_age)::float8 FROM uppzy.chat_job_stats
WHERE state IN ('queued', 'submitting', 'polling', 'retrying')
)sql";

inline constexpr const char* kDashOverviewHealth = R"sql(
SELECT period, finished, completed, failed, cancelled, poll_timeouts, timeout_rate::float8, retried,
       retry_rate::float8, p50_seconds::float8, p95_seconds::float8, failures_by_kind::text
FROM uppzy.chat_job_health
)sql";

// Jobs finished per minute over the last 24 hours, by outcome, and how many of them hit poll_timeout
// (the timeout rate chart). One range scan of chat_jobs_finished_time_idx (0011), the same rows the
// 24-hour health window reads. Minutes without a finished job are absent.
inline constexpr const char* kDashOverviewMinutes = R"sql(
WITH w AS (SELECT date_trunc('minute', now()) - interval '1439 minutes' AS start)
SELECT (extract(epoch FROM date_trunc('minute', j.finished_at) - w.start) / 60)::int AS minute,
       count(*) FILTER (WHERE j.phase = 'completed'),
       count(*) FILTER (WHERE j.phase = 'failed'),
       count(*) FILTER (WHERE j.phase = 'cancelled'),
       count(*) FILTER (WHERE j.errors @> '[{"kind": "poll_timeout"}]')
FROM w JOIN uppzy.chat_jobs j ON j.finished_at >= w.start
WHERE j.phase IN ('completed', 'failed', 'cancelled')
GROUP BY 1
ORDER BY 1
)sql";

inline constexpr const char* kDashOverviewIncidents = R"sql(
SELECT id, kind, http_status, detail, site_id, api_key_fingerprint, opened_by, opened_at, resolved_at
FROM uppzy.incidents
WHERE resolved_at IS NULL
ORDER BY opened_at DESC, id DESC
LIMIT 100
)sql";

// Workers that have not stopped (alive, or gone: heartbeat older than the lease) and were heard from
// within a day, and those that stopped within the last hour. Alive ones first.
inline constexpr const char* kDashOverviewWorkers = R"sql(
SELECT id, host, pid, version, site_id, started_at, heartbeat_at,
       greatest(extract(epoch FROM now() - heartbeat_at)::float8, 0), lease_ms, jobs_in_flight,
       breaker_state, stopped_at,
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
            WHEN heartbeat_at >= now() - lease_ms * interval '1 millisecond' THEN 'alive'
            ELSE 'gone' END AS status
FROM uppzy.workers
WHERE (stopped_at IS NULL AND heartbeat_at > now() - interval '24 hours')
   OR stopped_at > now() - interval '1 hour'
ORDER BY CASE WHEN stopped_at IS NOT NULL THEN 2
              WHEN heartbeat_at >= now() - lease_ms * interval '1 millisecond' THEN 0 ELSE 1 END,
         started_at DESC, id
LIMIT 100
)sql";

inline constexpr const char* kDashOverviewFeedback = R"sql(
SELECT period, delivered, failed, good, bad, good_ratio::float8, pending FROM uppzy.chat_feedback_health
)sql";

// One row per site (site_queues: the default site, site_id NULL, first), with its polling over the
// last hour (site_polling_health: one range scan of chat_jobs_finished_time_idx) and its open incidents.
// A site with no finished job in the hour has NULL polling figures. Its shared budget comes from
// uppzy.site_limits (0010): limit, effective rate, block, 429s and tokens granted (NULL/0 when none;
// the default site's budget row, under its UPPZY_SITE_ID, is not joined to the NULL row). At most 200.
inline constexpr const char* kDashOverviewSites = R"sql(
SELECT q.site_id, q.is_default, q.queued, q.retrying, q.submitting, q.polling,
       extract(epoch FROM q.oldest_queued_age)::float8, q.paused_at, q.paused_reason, q.served,
       coalesce(i.open_incidents, 0), coalesce(h.completed, 0), coalesce(h.poll_timeouts, 0),
       h.status_calls_per_completed::float8, h.seen_gap_p50_s::float8, h.seen_gap_p95_s::float8,
       l.requests_per_s::float8, l.effective_rate_per_s::float8, l.blocked_until,
       coalesce(l.rate_limited, 0), coalesce(l.tokens_granted, 0), l.max_in_flight
FROM uppzy.site_queues q
LEFT JOIN uppzy.site_polling_health h ON h.site_id IS NOT DISTINCT FROM q.site_id
LEFT JOIN uppzy.site_limits l ON l.site_id = q.site_id
LEFT JOIN (SELECT s.site_id, count(*) AS open_incidents  -- a site without a row: the default site's
           FROM uppzy.incidents n LEFT JOIN uppzy.sites s ON s.site_id = n.site_id
           WHERE n.resolved_at IS NULL GROUP BY s.site_id) i
       ON i.site_id IS NOT DISTINCT FROM q.site_id
ORDER BY q.site_id NULLS FIRST
LIMIT 200
)sql";

// ---- The jobs listing: newest first, keyset pagination (see migrations/0005_dashboard.sql). -------
// One branch per state (only the filtered one when state is given), each
//   "(" kDashJobsSelect " WHERE " <kDashBranch of the state> <filters> [<cursor>] kDashJobsOrder <$limit> ")"
// with the state a literal (from the store's own list: never request text), so each branch reads its
// partial index (through `phase`, see migrations/0013_phase.sql); the branches are merged by
// kDashJobsUnionBegin ... kDashJobsUnionEnd <$limit>. <filters> is one fragment per filter given, each
// followed by its parameter number (and the cast where one is shown).

// The last column is created_at in microseconds since the Unix epoch (the cursor). It is clamped to a
// bigint: a created_at in the year 294276 or 'infinity' is beyond one, and would fail the whole page.
inline constexpr const char* kDashJobsSelect = R"sql(
SELECT j.id, j.job_key, j.session_id, j.state, j.attempts, j.max_attempts, j.error_kind,
       j.last_http_status,
       CASE WHEN octet_length(j.request_id) <= 1024 THEN j.request_id
            ELSE left(j.request_id, 256) || '…' END AS request_id,
       j.created_at, j.finished_at,
       CASE WHEN octet_length(j.last_error) <= 4096 THEN j.last_error
            ELSE left(j.last_error, 1024) || format('… [%s bytes in all; uppzy-worker show %s prints it whole]',
                                                    octet_length(j.last_error), j.id) END AS last_error,
       j.cancel_requested_at,
       least(greatest(extract(epoch FROM j.created_at) * 1000000, -9223372036854775808),
             9223372036854775807)::bigint
FROM uppzy.chat_jobs j
)sql";

// A branch of the listing: the rows of one state, as the partial indexes name them.
struct DashBranch {
  const char* state;
  const char* where;
};
inline constexpr DashBranch kDashBranches[] = {
    {"queued", "j.phase = 'queued'"},
    {"submitting", "j.phase = 'held' AND j.state = 'submitting'"},
    {"polling", "j.phase = 'held' AND j.state = 'polling'"},
    {"retrying", "j.phase = 'retrying'"},
    {"completed", "j.phase = 'completed'"},
    {"failed", "j.phase = 'failed'"},
    {"cancelled", "j.phase = 'cancelled'"},
};

inline constexpr const char* kDashFilterState = " AND j.state = $";
inline constexpr const char* kDashFilterErrorKind = " AND j.error_kind = $";
inline constexpr const char* kDashFilterJobKey = " AND j.job_key = $";
inline constexpr const char* kDashFilterSessionId = " AND j.session_id = $";
// Followed by the parameter number and "::timestamptz".
inline constexpr const char* kDashFilterSince = " AND j.created_at >= $";
inline constexpr const char* kDashFilterUntil = " AND j.created_at < $";
// Two parameters: the cursor's created_at (timestamptz text) and id.
inline constexpr const char* kDashCursorCreated = " AND (j.created_at, j.id) < ($";
inline constexpr const char* kDashCursorId = "::timestamptz, $";
inline constexpr const char* kDashCursorEnd = "::bigint)";
inline constexpr const char* kDashJobsOrder = " ORDER BY j.created_at DESC, j.id DESC LIMIT $";
inline constexpr const char* kDashJobsUnionBegin = "SELECT * FROM (";
inline constexpr const char* kDashJobsUnionEnd = ") AS u ORDER BY u.created_at DESC, u.id DESC LIMIT $";

// "All that match the filter": the same WHERE, restricted to the states the function acts on.
inline constexpr const char* kDashRetryMatchingBegin =
    "SELECT uppzy.retry_jobs(ARRAY(SELECT j.id FROM uppzy.chat_jobs j "
    "WHERE j.phase IN ('completed', 'failed', 'cancelled')";
inline constexpr const char* kDashCancelMatchingBegin =
    "SELECT uppzy.cancel_jobs(ARRAY(SELECT j.id FROM uppzy.chat_jobs j "
    "WHERE j.phase IN ('queued', 'retrying', 'held')";
inline constexpr const char* kDashMatchingEnd = "))";

// ---- One job. -------------------------------------------------------------------------------------

// $1 id. Every column but message and answer, and the finish notification's payload built as
// uppzy.chat_jobs_notify_finished() builds it (migrations/0003_feedback.sql), for finished jobs.
//
// metadata and result: the value's text when it is at most 16,384 bytes; otherwise the marker
//   {"truncated": true, "bytes": <bytes of the text>, "preview": <its first 4,096 characters>,
//    "full_value": "uppzy-worker show <id> --json"}.
// errors: the whole array when its text is at most 16,384 bytes; otherwise the newest entries whose
//   texts add up to at most 16,384 bytes (oldest first, as stored), after one marker entry
//   {"kind": "truncated", "truncated": true, "omitted": <older entries left out>, "entries": <all>,
//    "bytes": <bytes of the whole text>, "message": "...", "full_value": "uppzy-worker show <id> --json"}.
//   An entry larger than 4,096 bytes is itself replaced by {"truncated": true, "bytes", "kind", "at",
//   "attempt", "http_status", "message": <its first 1,024 characters>}, each field cut short.
// last_error above 4,096 bytes: its first 1,024 characters and a note; request_id and locked_by above
// 1,024 bytes: their first 256 characters and "…".
// Each large value is turned into text once (the OFFSET 0 keeps the planner from repeating it).
inline constexpr const char* kDashJobsGet = R"sql(
SELECT j.id, j.job_key, j.session_id, j.state, j.attempts, j.max_attempts, j.error_kind, j.last_http_status,
       CASE WHEN octet_length(j.request_id) <= 1024 THEN j.request_id ELSE left(j.request_id, 256) || '…' END,
       j.created_at, j.finished_at,
       j.response_language, j.priority, j.polls, j.run_at, j.updated_at, j.submitted_at, j.poll_deadline,
       CASE WHEN octet_length(j.locked_by) <= 1024 THEN j.locked_by ELSE left(j.locked_by, 256) || '…' END,
       j.lease_expires_at, j.cancel_requested_at,
       CASE WHEN octet_length(j.last_error) <= 4096 THEN j.last_error
            ELSE left(j.last_error, 1024) || format('… [%s bytes in all; uppzy-worker show %s prints it whole]',
                                                    octet_length(j.last_error), j.id) END,
       (SELECT CASE WHEN e.bytes IS NULL OR e.bytes <= 16384 THEN e.t ELSE (
                 SELECT (CASE WHEN count(*) FILTER (WHERE k.cum > 16384) = 0 THEN '[]'::jsonb
                              ELSE jsonb_build_array(jsonb_build_object(
                                'kind', 'truncated', 'truncated', true,
                                'omitted', count(*) FILTER (WHERE k.cum > 16384),
                                'entries', count(*), 'bytes', e.bytes,
                                'message', format('%s older entries of %s left out: the history is %s bytes, '
                                                  'and the dashboard shows the newest within 16 KiB. '
                                                  'uppzy-worker show %s --json prints it whole.',
                                                  count(*) FILTER (WHERE k.cum > 16384), count(*), e.bytes, j.id),
                                'full_value', format('uppzy-worker show %s --json', j.id))) END
                         || coalesce(jsonb_agg(k.v ORDER BY k.ord) FILTER (WHERE k.cum <= 16384), '[]'))::text
                 FROM (SELECT b.ord, b.v, sum(octet_length(b.v::text)) OVER (ORDER BY b.ord DESC) AS cum
                       FROM (SELECT a.ord,
                                    CASE WHEN a.bytes <= 4096 THEN a.v
                                         ELSE jsonb_build_object(
                                           'truncated', true, 'bytes', a.bytes,
                                           'kind', left(a.v ->> 'kind', 64), 'at', left(a.v ->> 'at', 64),
                                           'attempt', left(a.v ->> 'attempt', 32),
                                           'http_status', left(a.v ->> 'http_status', 32),
                                           'message', left(coalesce(a.v ->> 'message', a.v #>> '{}'), 1024)
                                                      || format('… [entry truncated: %s bytes]', a.bytes))
                                    END AS v
                             FROM (SELECT x.ord, x.v, octet_length(x.v::text) AS bytes
                                   FROM jsonb_array_elements(j.errors) WITH ORDINALITY AS x(v, ord)
                                   OFFSET 0) a) b) k) END
        FROM (SELECT t.t, octet_length(t.t) AS bytes FROM (SELECT j.errors::text AS t OFFSET 0) t) e),
       (SELECT CASE WHEN m.bytes IS NULL OR m.bytes <= 16384 THEN m.t
                    ELSE jsonb_build_object('truncated', true, 'bytes', m.bytes, 'preview', left(m.t, 4096),
                                            'full_value', format('uppzy-worker show %s --json', j.id))::text END
        FROM (SELECT t.t, octet_length(t.t) AS bytes FROM (SELECT j.metadata::text AS t OFFSET 0) t) m),
       (SELECT CASE WHEN r.bytes IS NULL OR r.bytes <= 16384 THEN r.t
                    ELSE jsonb_build_object('truncated', true, 'bytes', r.bytes, 'preview', left(r.t, 4096),
                                            'full_value', format('uppzy-worker show %s --json', j.id))::text END
        FROM (SELECT t.t, octet_length(t.t) AS bytes FROM (SELECT j.result::text AS t OFFSET 0) t) r),
       CASE WHEN j.state IN ('completed', 'failed', 'cancelled')
            THEN json_build_object('kind', 'chat_job', 'id', j.id, 'job_key', j.job_key, 'state', j.state)::text
       END
FROM uppzy.chat_jobs j WHERE j.id = $1
)sql";

// $1 id. Needs SELECT on message and answer (uppzy_operator does not have it). A text above 16,384
// bytes comes back as its first 4,096 characters and a note naming `uppzy-worker show <id>
// --show-text`. octet_length of a text reads its stored size, and left() only the start of it.
inline constexpr const char* kDashJobsText = R"sql(
SELECT CASE WHEN octet_length(message) <= 16384 THEN message
            ELSE left(message, 4096) || format(E'\n… [truncated by the dashboard: %s bytes in all; '
                                               'uppzy-worker show %s --show-text prints it whole]',
                                               octet_length(message), id) END,
       CASE WHEN octet_length(answer) <= 16384 THEN answer
            ELSE left(answer, 4096) || format(E'\n… [truncated by the dashboard: %s bytes in all; '
                                              'uppzy-worker show %s --show-text prints it whole]',
                                              octet_length(answer), id) END
FROM uppzy.chat_jobs WHERE id = $1
)sql";

// ---- Actions: only the operator functions. ---------------------------------------------------------

// $1 bigint[] ids.
inline constexpr const char* kDashJobsRetry = "SELECT uppzy.retry_jobs($1::bigint[])";
inline constexpr const char* kDashJobsCancel = "SELECT uppzy.cancel_jobs($1::bigint[])";
// $1 id: true when it was open and is now resolved.
inline constexpr const char* kDashIncidentsResolve = "SELECT uppzy.resolve_incident($1::bigint)";
// $1 id: whether the incident exists at all (to tell "already resolved" from "no such incident").
inline constexpr const char* kDashIncidentsExists =
    "SELECT EXISTS (SELECT 1 FROM uppzy.incidents WHERE id = $1)";

inline constexpr const char* kDashPing = "SELECT 1";

}  // namespace uppzy::store::sql
