// Every SQL statement the store runs, one named query each. Nothing outside src/store writes SQL
// against the jobs table (tests aside).
#pragma once

namespace uppzy::store::sql {

inline constexpr const char* kMigrationsBootstrap = R"sql(
CREATE SCHEMA IF NOT EXISTS uppzy;
CREATE TABLE IF NOT EXISTS uppzy.schema_migrations (
  version    int PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
)sql";

inline constexpr const char* kMigrationsLock = "SELECT pg_advisory_lock(hashtext('uppzy.migrate'))";
inline constexpr const char* kMigrationsUnlock = "SELECT pg_advisory_unlock(hashtext('uppzy.migrate'))";
inline constexpr const char* kMigrationsApplied = "SELECT version FROM uppzy.schema_migrations";
inline constexpr const char* kMigrationsRecord =
    "INSERT INTO uppzy.schema_migrations (version, name) VALUES ($1, $2)";

// Columns every claim or adoption returns, in this order. The last is the row's site, NULL read as the
// scope's default site ($5 in every statement that returns them).
#define UPPZY_CLAIMED_COLUMNS                                                                          \
  "j.id, coalesce(j.job_key, ''), j.session_id, j.message, j.response_language, j.state, j.attempts, " \
  "j.max_attempts, coalesce(j.request_id, ''), "                                                       \
  "coalesce((extract(epoch FROM j.submitted_at) * 1000)::bigint, 0), "                                 \
  "coalesce((extract(epoch FROM j.poll_deadline) * 1000)::bigint, 0), j.polls, "                       \
  "(extract(epoch FROM j.created_at) * 1000)::bigint, coalesce(j.site_id, $5)"

// The claim of a ClaimScope, shared by jobs and deliveries: CTEs `lanes`, `picked` and `c` (c.id, the
// rows to claim). $3 text[] sites, $4 int[] their limits (one per site, see ScopeArrays), $5 the
// default site. A lane is a site of the scope with room and no pause in uppzy.sites. Each lane reads
// the best `lim` claimable rows of its site from the site's range of the site index; the default
// site's lane also reads the best `lim` NULL-site rows from the NULL-site index, and the two are
// merged, best first, to `lim` (the rows locked and not taken are released at commit). `table` is the
// table, `waiting` the predicate of its claimable rows (as its claim indexes name them), `priority` the row's
// priority (an expression of j), `order` the order of its claim index.
#define UPPZY_CLAIM_SCOPE_LANE(table, waiting, priority, order, site_rule)    \
  "SELECT l.site, l.lim, c.* FROM lanes l CROSS JOIN LATERAL ("               \
  "SELECT j.id, " priority " AS priority, j.run_at FROM uppzy." table         \
  " j "                                                                       \
  "WHERE " waiting " AND j.run_at <= now() AND " site_rule " ORDER BY " order \
  " LIMIT l.lim FOR UPDATE OF j SKIP LOCKED) c "
#define UPPZY_CLAIM_SCOPE(table, waiting, priority, order) \
  "lanes AS ("                                                                                              \
  "SELECT s.site, s.lim FROM unnest($3::text[], $4::int[]) AS s(site, lim) "                                \
  "WHERE s.lim > 0 AND NOT EXISTS ("                                                                        \
  "SELECT 1 FROM uppzy.sites p WHERE p.site_id = s.site AND p.paused_at IS NOT NULL)"                      \
  "), picked AS (" UPPZY_CLAIM_SCOPE_LANE(table, waiting, priority, order, "j.site_id = l.site") " UNION ALL "       \
  UPPZY_CLAIM_SCOPE_LANE(table, waiting, priority, order, "j.site_id IS NULL") " WHERE l.site = $5"                  \
  "), c AS ("                                                                                               \
  "SELECT p.id, p.priority, p.run_at, p.site_rank FROM (SELECT p.*, row_number() OVER ("                                 \
  "PARTITION BY p.site ORDER BY p.priority DESC, p.run_at, p.id) AS site_rank FROM picked p) p "            \
  "WHERE p.site_rank <= p.lim"

// Every claim-like UPDATE below names its rows by `j.id = ANY (ARRAY(SELECT c.id FROM c))`, an index
// probe per row, rather than joining `c`: joined, the planner hashed the whole table (a sequential scan
// of every row, finished ones included) to update 500 of them. The claims return their rows in `c`'s
// order (best first) by joining the updated rows back to `c`.
// $1 worker, $2 lease ms, $3 text[] sites, $4 int[] limits, $5 default site (see UPPZY_CLAIM_SCOPE),
// $6 the most rows in all. At most each site's limit of its best rows (priority DESC, run_at, id), and
// $6 in all taken round the sites: every site's best row, then every site's second, ... So a site's
// backlog never takes another's share, and a site alone gets everything (rows locked beyond $6 are
// released at commit). Rows of sites not in the scope, and of paused sites, are never claimed.
inline constexpr const char* kJobsClaimQueued = "WITH " UPPZY_CLAIM_SCOPE(
    "chat_jobs", "j.phase IN ('queued', 'retrying')", "j.priority", "j.priority DESC, j.run_at, j.id") R"sql(
  ORDER BY p.site_rank, p.priority DESC, p.run_at, p.id
  LIMIT $6
), u AS (
  UPDATE uppzy.chat_jobs j
  SET state = 'submitting', attempts = j.attempts + 1, locked_by = $1,
    lease_expires_at = now() + $2::bigint * interval '1 millisecond',
    request_id = NULL, submitted_at = NULL, poll_deadline = NULL, polls = 0, updated_at = now()
  WHERE j.id = ANY (ARRAY(SELECT c.id FROM c))
  RETURNING )sql" UPPZY_CLAIMED_COLUMNS R"sql(
)
SELECT u.* FROM u JOIN c ON c.id = u.id ORDER BY c.site_rank, c.priority DESC, c.run_at, c.id
)sql";

// $1 worker, $2 lease ms, $3 text[] sites, $4 limit, $5 default site (NULL-site rows are its). Only
// rows of the listed sites that are not paused in uppzy.sites. `which` narrows the rows looked at.
#define UPPZY_ADOPT_POLLING(which)                                                         \
  "WITH c AS ( SELECT j.id FROM uppzy.chat_jobs j "                                        \
  "WHERE j.phase = 'held' AND j.state = 'polling' AND j.lease_expires_at <= now() " which  \
  " AND coalesce(j.site_id, $5) = ANY ($3::text[]) "                                       \
  "AND NOT EXISTS (SELECT 1 FROM uppzy.sites p "                                           \
  "WHERE p.site_id = coalesce(j.site_id, $5) AND p.paused_at IS NOT NULL) "                \
  "ORDER BY j.lease_expires_at LIMIT $4 FOR UPDATE OF j SKIP LOCKED) "                     \
  "UPDATE uppzy.chat_jobs j "                                                              \
  "SET locked_by = $1, lease_expires_at = now() + $2::bigint * interval '1 millisecond', " \
  "updated_at = now() "                                                                    \
  "WHERE j.id = ANY (ARRAY(SELECT c.id FROM c)) RETURNING " UPPZY_CLAIMED_COLUMNS

// Every expired polling row: reads every held row of the fleet (chat_jobs_active_state_idx; there is
// no lease index, so that renewals stay HOT). Run only when a lease may have run out (LeasesSweepDue).
inline constexpr const char* kJobsAdoptPolling = UPPZY_ADOPT_POLLING("");
// Only rows a worker handed back (locked_by NULL: shutdown, incident): chat_jobs_handed_back_idx
// (0016), usually empty, so this runs at every wake-up for next to nothing.
inline constexpr const char* kJobsAdoptHandedBack = UPPZY_ADOPT_POLLING("AND j.locked_by IS NULL");

// $1 window ms. True when a held row's lease may have run out without its holder handing it back, so
// that a rescue pass must read every held row: a worker missed a heartbeat (half a lease, where it
// writes one every third) within the last two leases and the window (also after a clean stop: a
// submission still in flight when the grace period ended is left to its lease), or a worker (re)started
// within a lease and the window (the default worker id is host-pid, and a container's pid is the same at
// every restart: the new process carries on the dead one's heartbeat, and the dead one's rows expire
// within a lease of the start). uppzy.workers holds a row per worker id: a scan of it is cheap.
inline constexpr const char* kLeasesSweepDue = R"sql(
SELECT EXISTS (
  SELECT 1 FROM uppzy.workers w
  WHERE (w.heartbeat_at < now() - (w.lease_ms / 2) * interval '1 millisecond'
         AND w.heartbeat_at >= now() - (2 * w.lease_ms + $1::bigint) * interval '1 millisecond')
     OR w.started_at >= now() - (w.lease_ms + $1::bigint) * interval '1 millisecond'
)
)sql";

// $1 limit.
inline constexpr const char* kJobsRescueExpiredSubmitting = R"sql(
WITH c AS (
  SELECT id FROM uppzy.chat_jobs
  WHERE phase = 'held' AND state = 'submitting' AND lease_expires_at <= now()
  LIMIT $1
  FOR UPDATE SKIP LOCKED
)
UPDATE uppzy.chat_jobs j
SET state = CASE WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'failed' END,
    run_at = now(),
    error_kind = 'lease_expired',
    last_error = 'the worker holding the row lost its lease while submitting; the submission may have reached Uppzy',
    last_http_status = NULL,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
      'attempt', j.attempts, 'at', now(), 'kind', 'lease_expired', 'http_status', NULL,
      'message', 'lease of ' || coalesce(j.locked_by, '?') || ' expired while submitting',
      'request_id', NULL)),
    locked_by = NULL, lease_expires_at = NULL,
    finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
    updated_at = now()
WHERE j.id = ANY (ARRAY(SELECT c.id FROM c))
RETURNING j.id
)sql";

// The batch of writes as rows: one typed array per column ($2 .. $22, see JobWriteColumns in store.cc),
// unnested side by side. The planner sees the batch's size, and nothing is parsed as JSON. Each row also
// carries the worker ($1): the statements below compare `j.locked_by = u.worker` inside a materialized
// `u`, so the planner cannot turn the guard into a filter on the table. As a filter, `locked_by = $1`
// was estimated at 1 row (after ANALYZE no row is locked), and the planner scanned the table once and
// the batch once per row it found (a nested loop: 250,000 comparisons for 500 writes, 190 ms). The rows
// are found through the primary key (`j.id = ANY ($2)`), never by reading the table.
#define UPPZY_APPLY_BATCH                                                                                    \
  "SELECT *, $1::text AS worker FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[], $6::int[], "    \
  "$7::boolean[], "                                                                                          \
  "$8::boolean[], $9::boolean[], $10::text[], $11::double precision[], $12::double precision[], "            \
  "$13::int[], "                                                                                             \
  "$14::double precision[], $15::text[], $16::jsonb[], $17::text[], $18::text[], $19::int[], $20::jsonb[], " \
  "$21::int[], $22::int[]) AS u("                                                                            \
  "id, expected_state, expected_attempt, new_state, attempts_delta, "                                        \
  "keep_lock, expire_lease, clear_request, request_id, "                                                     \
  "submitted_at_ms, poll_deadline_ms, polls, "                                                               \
  "run_at_ms, answer, result, error_kind, last_error, "                                                      \
  "last_http_status, error_entry, answer_ready_after_ms, answer_seen_after_ms)"

// The SET list of both forms of the batched write (u: the write, j: the row).
#define UPPZY_APPLY_SET                                                                                      \
  "state = u.new_state, "                                                                                    \
  "attempts = j.attempts + u.attempts_delta, "                                                               \
  "request_id = CASE WHEN u.request_id IS NOT NULL THEN u.request_id "                                       \
  "WHEN u.clear_request THEN NULL ELSE j.request_id END, "                                                   \
  "submitted_at = CASE WHEN u.submitted_at_ms IS NOT NULL THEN to_timestamp(u.submitted_at_ms / 1000.0) "    \
  "WHEN u.clear_request THEN NULL ELSE j.submitted_at END, "                                                 \
  "poll_deadline = CASE WHEN u.poll_deadline_ms IS NOT NULL THEN to_timestamp(u.poll_deadline_ms / 1000.0) " \
  "WHEN u.clear_request THEN NULL ELSE j.poll_deadline END, "                                                \
  "polls = coalesce(u.polls, j.polls), "                                                                     \
  "answer_ready_after_ms = CASE WHEN u.answer_ready_after_ms IS NOT NULL THEN u.answer_ready_after_ms "      \
  "WHEN u.clear_request THEN NULL ELSE j.answer_ready_after_ms END, "                                        \
  "answer_seen_after_ms = CASE WHEN u.answer_ready_after_ms IS NOT NULL THEN u.answer_seen_after_ms "        \
  "WHEN u.clear_request THEN NULL ELSE j.answer_seen_after_ms END, "                                         \
  "run_at = coalesce(to_timestamp(u.run_at_ms / 1000.0), j.run_at), "                                        \
  "answer = coalesce(u.answer, j.answer), "                                                                  \
  "result = coalesce(u.result, j.result), "                                                                  \
  "error_kind = coalesce(u.error_kind, j.error_kind), "                                                      \
  "last_error = CASE WHEN u.error_kind IS NOT NULL THEN u.last_error ELSE j.last_error END, "                \
  "last_http_status = CASE WHEN u.error_kind IS NOT NULL THEN u.last_http_status ELSE j.last_http_status "   \
  "END, "                                                                                                    \
  "errors = CASE WHEN u.error_entry IS NULL THEN j.errors ELSE j.errors || "                                 \
  "jsonb_build_array(u.error_entry) END, "                                                                   \
  "locked_by = CASE WHEN u.keep_lock THEN j.locked_by END, "                                                 \
  "lease_expires_at = CASE WHEN u.keep_lock THEN j.lease_expires_at WHEN u.expire_lease THEN now() END, "    \
  "finished_at = CASE WHEN u.new_state IN ('completed', 'failed', 'cancelled') THEN now() END, "             \
  "updated_at = now() "

// $1 worker, $2 .. $22 the writes (UPPZY_APPLY_BATCH): the same change as kJobsApplyWritesSkipLocked,
// as one plain guarded UPDATE that returns the ids applied. It sets its own lock_timeout of 100 ms for
// its transaction (`t`: every row of `u`, so every row it updates, comes after it), so it can run
// alone, one round trip, instead of after a SET LOCAL in an explicit transaction: if a row is locked by
// another session it fails with 55P03 and the store redoes the batch with the skip-locked form.
inline constexpr const char* kJobsApplyWritesFast = R"sql(
WITH t AS MATERIALIZED (
  SELECT set_config('lock_timeout', '100ms', true)
), u AS MATERIALIZED (
  SELECT b.* FROM t CROSS JOIN ()sql" UPPZY_APPLY_BATCH R"sql() AS b
)
UPDATE uppzy.chat_jobs j
SET )sql" UPPZY_APPLY_SET R"sql(
FROM u
WHERE j.id = ANY ($2::bigint[]) AND j.id = u.id AND j.state = u.expected_state
  AND j.attempts = u.expected_attempt AND j.locked_by = u.worker
RETURNING j.id
)sql";

// $1 worker, $2 .. $22 the writes (see JobWrite and UPPZY_APPLY_BATCH). Guarded by holder, state and attempt.
// This is the skip-locked form: it never waits on another session's lock. A row an app holds (SELECT ... FOR
// UPDATE, an open UPDATE) is skipped and its write kept for the next round. Returns one row per write: id,
// exists, locked (by us now), applied. Locking first costs a row lock per write,
// so the store tries kJobsApplyWritesFast first (see Store::JobsApplyWrites).
inline constexpr const char* kJobsApplyWritesSkipLocked = R"sql(
WITH u AS (
  )sql" UPPZY_APPLY_BATCH R"sql(
), l AS (
  -- The writes whose rows we could lock now; rows another session holds are skipped, not waited on.
  SELECT u.* FROM u JOIN uppzy.chat_jobs j ON j.id = u.id
  WHERE j.id = ANY ($2::bigint[]) FOR UPDATE OF j SKIP LOCKED
), w AS (
  UPDATE uppzy.chat_jobs j
  SET )sql" UPPZY_APPLY_SET R"sql(
  FROM l AS u
  WHERE j.id = ANY ($2::bigint[]) AND j.id = u.id AND j.state = u.expected_state
    AND j.attempts = u.expected_attempt AND j.locked_by = u.worker
  RETURNING j.id
)
SELECT u.id,
       EXISTS (SELECT 1 FROM uppzy.chat_jobs x WHERE x.id = u.id),
       EXISTS (SELECT 1 FROM l WHERE l.id = u.id),
       EXISTS (SELECT 1 FROM w WHERE w.id = u.id)
FROM u
)sql";

// Every worker connection: a statement that would still wait on a lock after this long fails
// (SQLSTATE 55P03) instead of stalling claims, leases and the heartbeat behind an app's transaction.
// The hot statements skip locked rows and never get there; this bounds everything else.
inline constexpr const char* kSessionLockTimeout = "SET lock_timeout = '2s'";

// $1 worker, $2 bigint[] ids, $3 lease ms. A row another session holds locked is skipped (renewed at
// the next pass, a third of a lease later), never waited on.
inline constexpr const char* kJobsRenewLeases = R"sql(
WITH l AS (
  SELECT id FROM uppzy.chat_jobs
  WHERE id = ANY($2::bigint[]) AND locked_by = $1 AND state IN ('submitting', 'polling')
  FOR UPDATE SKIP LOCKED
)
UPDATE uppzy.chat_jobs j
SET lease_expires_at = now() + $3::bigint * interval '1 millisecond'
WHERE j.id = ANY (ARRAY(SELECT l.id FROM l))
RETURNING j.id
)sql";

// $1 worker: milliseconds until the first lease held by another worker runs out (negative: one has),
// NULL when none is held. Jobs through chat_jobs_active_state_idx (held rows only), ratings and closes
// through their lease indexes.
inline constexpr const char* kLeasesNextExpiry = R"sql(
SELECT (extract(epoch FROM min(t) - now()) * 1000)::bigint FROM (
  SELECT min(lease_expires_at) AS t FROM uppzy.chat_jobs
  WHERE phase = 'held' AND locked_by IS DISTINCT FROM $1
  UNION ALL
  SELECT min(lease_expires_at) FROM uppzy.chat_feedback WHERE state = 'sending' AND locked_by IS DISTINCT FROM $1
  UNION ALL
  SELECT min(lease_expires_at) FROM uppzy.session_closes WHERE state = 'sending' AND locked_by IS DISTINCT FROM $1
) x
)sql";

// Each EXISTS matches one partial index exactly.
inline constexpr const char* kJobsAnyUnfinished = R"sql(
SELECT EXISTS (SELECT 1 FROM uppzy.chat_jobs WHERE phase IN ('queued', 'retrying'))
    OR EXISTS (SELECT 1 FROM uppzy.chat_jobs WHERE phase = 'held')
)sql";

// The same INSERT a web app runs. $1 job_key ('' = none), $2 session, $3 message, $4 language,
// $5 max_attempts (0 = default), $6 priority, $7 metadata.
inline constexpr const char* kJobsEnqueue = R"sql(
INSERT INTO uppzy.chat_jobs (job_key, session_id, message, response_language, max_attempts, priority, metadata)
VALUES (nullif($1, ''), $2, $3, $4, coalesce(nullif($5::int, 0), 3), $6::smallint, $7::jsonb)
ON CONFLICT (job_key) DO NOTHING
RETURNING id
)sql";
inline constexpr const char* kJobsIdByKey = "SELECT id FROM uppzy.chat_jobs WHERE job_key = $1";

// $1 kind, $2 http_status, $3 detail, $4 site, $5 fingerprint, $6 worker.
inline constexpr const char* kIncidentsOpen = R"sql(
INSERT INTO uppzy.incidents (kind, http_status, detail, site_id, api_key_fingerprint, opened_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (api_key_fingerprint) WHERE resolved_at IS NULL DO NOTHING
RETURNING id
)sql";
inline constexpr const char* kIncidentsOpenFor =
    "SELECT id FROM uppzy.incidents WHERE api_key_fingerprint = $1 AND resolved_at IS NULL";
// $1 text[] fingerprints: those with an open incident (incidents_one_open_per_key, one probe each).
inline constexpr const char* kIncidentsOpenAmong =
    "SELECT DISTINCT api_key_fingerprint FROM uppzy.incidents "
    "WHERE api_key_fingerprint = ANY ($1::text[]) AND resolved_at IS NULL";
inline constexpr const char* kIncidentsList = R"sql(
SELECT id, kind, coalesce(http_status, 0), coalesce(detail, ''), api_key_fingerprint,
       to_char(opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       coalesce(to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '')
FROM uppzy.incidents WHERE NOT $1::boolean OR resolved_at IS NULL ORDER BY id
)sql";
inline constexpr const char* kIncidentsResolve =
    "UPDATE uppzy.incidents SET resolved_at = now() WHERE id = $1 AND resolved_at IS NULL RETURNING id";
inline constexpr const char* kIncidentsResolveAll =
    "UPDATE uppzy.incidents SET resolved_at = now() WHERE resolved_at IS NULL RETURNING id";

// $1 worker id, $2 host, $3 pid, $4 version, $5 site, $6 lease ms, $7 jobs in flight, $8 breaker state,
// $9 text[] the sites it holds keys for, $10 true at the process's first heartbeat (started_at is then
// now, also when the id is a dead process's: kLeasesSweepDue reads it).
inline constexpr const char* kWorkersHeartbeat = R"sql(
INSERT INTO uppzy.workers AS w (id, host, pid, version, site_id, lease_ms, jobs_in_flight, breaker_state, sites)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text[])
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), jobs_in_flight = EXCLUDED.jobs_in_flight, breaker_state = EXCLUDED.breaker_state,
    lease_ms = EXCLUDED.lease_ms, sites = EXCLUDED.sites, stopped_at = NULL,
    started_at = CASE WHEN $10::boolean THEN now() ELSE w.started_at END,
    host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version, site_id = EXCLUDED.site_id
)sql";
inline constexpr const char* kWorkersStopped =
    "UPDATE uppzy.workers SET stopped_at = now(), heartbeat_at = now(), jobs_in_flight = 0 WHERE id = $1";

// Rows this worker holds whose cancellation was requested (the column comes with migration 0002).
inline constexpr const char* kJobsCancelRequested = R"sql(
SELECT id FROM uppzy.chat_jobs
WHERE locked_by = $1 AND cancel_requested_at IS NOT NULL AND phase = 'held'
)sql";

// Wakes other workers so they adopt handed-back polling rows at once.
inline constexpr const char* kNotifyHandBack = "SELECT pg_notify('uppzy_chat_jobs_wakeup', 'handback')";

}  // namespace uppzy::store::sql
