-- 0013: the indexes read `phase`, not `state`, so the accepted write is a HOT update (issue 13).
--
-- An UPDATE is HOT (no new index entry, the new version on the same page) only when it changes no
-- column any index reads, in its key or its predicate. Every index of chat_jobs but the primary key and
-- job_key read `state`, and every write of a job changes it, so all three writes of a job (claim,
-- accepted, completed) added an entry to three or more indexes. Yet no index needs to tell submitting
-- from polling: the claim reads queued and retrying rows, rescue and adoption read held rows, the
-- dashboard reads finished rows. `phase` is `state` with those two merged into 'held'; it is a stored
-- generated column (nobody writes it), and every index reads it instead of `state`. The accepted
-- write (submitting -> polling) and the lease renewals now change no indexed column.
--
-- Statements name `phase` wherever they want an index: `phase = 'failed'` for a finished state (phase
-- equals state there), `phase = 'held' AND state = 'polling'` for one held state. A statement that
-- names only `state` still returns the same rows; it just cannot use these partial indexes.
--
-- The index names are the same as before, with `phase` where they had `state`.
--
-- On a large table ADD COLUMN ... STORED rewrites the table and its indexes under an exclusive lock:
-- 8.6 s for 1,000,000 rows (720 MB) on the benchmark machine, during which workers and the app's
-- INSERTs wait. Run it when a pause that long is acceptable.

CREATE FUNCTION uppzy.job_phase(state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN job_phase.state IN ('submitting', 'polling') THEN 'held' ELSE job_phase.state END
$$;

COMMENT ON FUNCTION uppzy.job_phase(text) IS
  'The phase of a job state: submitting and polling are held; every other state is its own phase.';

ALTER TABLE uppzy.chat_jobs ADD COLUMN phase text GENERATED ALWAYS AS (uppzy.job_phase(state)) STORED;

COMMENT ON COLUMN uppzy.chat_jobs.phase IS
  'state with submitting and polling merged into held; what the indexes read (0013). Never written.';

DROP INDEX uppzy.chat_jobs_claimable_idx;
DROP INDEX uppzy.chat_jobs_site_claimable_idx;
DROP INDEX uppzy.chat_jobs_active_state_idx;
DROP INDEX uppzy.chat_jobs_finished_created_idx;
DROP INDEX uppzy.chat_jobs_finished_error_kind_idx;
DROP INDEX uppzy.chat_jobs_finished_session_idx;
DROP INDEX uppzy.chat_jobs_finished_time_idx;

CREATE INDEX chat_jobs_claimable_idx ON uppzy.chat_jobs (priority DESC, run_at, id)
  WHERE phase IN ('queued', 'retrying') AND site_id IS NULL;
CREATE INDEX chat_jobs_site_claimable_idx ON uppzy.chat_jobs (site_id, priority DESC, run_at, id)
  WHERE phase IN ('queued', 'retrying') AND site_id IS NOT NULL;
-- Unfinished rows by phase and age: queue depth, the oldest waiting job, and the held rows that
-- rescue, adoption and the lease look-ahead read (they check `state` and the lease on each).
CREATE INDEX chat_jobs_active_state_idx ON uppzy.chat_jobs (phase, created_at)
  WHERE phase IN ('queued', 'held', 'retrying');
CREATE INDEX chat_jobs_finished_created_idx ON uppzy.chat_jobs (phase, created_at, id)
  WHERE phase IN ('completed', 'failed', 'cancelled');
CREATE INDEX chat_jobs_finished_error_kind_idx ON uppzy.chat_jobs (error_kind, phase, created_at, id)
  WHERE phase IN ('completed', 'failed', 'cancelled') AND error_kind IS NOT NULL;
CREATE INDEX chat_jobs_finished_session_idx ON uppzy.chat_jobs (session_id, phase, created_at, id)
  WHERE phase IN ('completed', 'failed', 'cancelled');
CREATE INDEX chat_jobs_finished_time_idx ON uppzy.chat_jobs (finished_at, phase)
  WHERE phase IN ('completed', 'failed', 'cancelled');

-- The views and functions that read a partial index, restated with `phase` (same columns, same rows).

CREATE OR REPLACE VIEW uppzy.chat_job_stats AS
          SELECT 'queued'::text AS state, count(*) AS jobs, now() - min(created_at) AS oldest_age
            FROM uppzy.chat_jobs WHERE phase = 'queued'
UNION ALL SELECT 'submitting', count(*), now() - min(created_at)
            FROM uppzy.chat_jobs WHERE phase = 'held' AND state = 'submitting'
UNION ALL SELECT 'polling', count(*), now() - min(created_at)
            FROM uppzy.chat_jobs WHERE phase = 'held' AND state = 'polling'
UNION ALL SELECT 'retrying', count(*), now() - min(created_at) FROM uppzy.chat_jobs WHERE phase = 'retrying'
UNION ALL SELECT 'completed', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE phase = 'completed'
UNION ALL SELECT 'failed', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE phase = 'failed'
UNION ALL SELECT 'cancelled', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE phase = 'cancelled';

CREATE OR REPLACE VIEW uppzy.chat_job_failures AS
SELECT id, job_key, session_id, error_kind, last_error, last_http_status, attempts, max_attempts,
       request_id, errors, created_at, finished_at
FROM uppzy.chat_jobs
WHERE phase = 'failed'
ORDER BY finished_at DESC;

CREATE OR REPLACE VIEW uppzy.site_queues AS
WITH q AS (
  SELECT j.site_id,
         count(*) FILTER (WHERE j.state = 'queued') AS queued,
         count(*) FILTER (WHERE j.state = 'retrying') AS retrying,
         count(*) FILTER (WHERE j.state = 'submitting') AS submitting,
         count(*) FILTER (WHERE j.state = 'polling') AS polling,
         now() - min(j.created_at) FILTER (WHERE j.state IN ('queued', 'retrying')) AS oldest_queued_age
  FROM uppzy.chat_jobs j
  WHERE j.phase IN ('queued', 'held', 'retrying')
  GROUP BY j.site_id
), k AS (
  SELECT NULL::text AS site_id
  UNION ALL
  SELECT s.site_id FROM uppzy.sites s
)
SELECT k.site_id,
       k.site_id IS NULL AS is_default,
       coalesce(q.queued, 0) AS queued,
       coalesce(q.retrying, 0) AS retrying,
       coalesce(q.submitting, 0) AS submitting,
       coalesce(q.polling, 0) AS polling,
       q.oldest_queued_age,
       s.paused_at,
       s.paused_reason,
       CASE WHEN k.site_id IS NULL THEN EXISTS (SELECT 1 FROM uppzy.live_worker_sites)
            ELSE EXISTS (SELECT 1 FROM uppzy.live_worker_sites l WHERE l.site_id = k.site_id) END AS served
FROM k
LEFT JOIN q ON q.site_id IS NOT DISTINCT FROM k.site_id
LEFT JOIN uppzy.sites s ON s.site_id = k.site_id
ORDER BY k.site_id NULLS FIRST;

CREATE OR REPLACE VIEW uppzy.chat_job_health AS
WITH finished AS MATERIALIZED (
  -- One index range scan of the last 24 hours; the last hour is a subset of it.
  SELECT j.state,
         j.error_kind,
         j.attempts > 1 AS retried,
         j.errors @> '[{"kind": "poll_timeout"}]' AS hit_poll_timeout,
         extract(epoch FROM j.finished_at - j.created_at)::float8 AS seconds,
         j.finished_at >= now() - interval '1 hour' AS in_last_hour
  FROM uppzy.chat_jobs j
  WHERE j.phase IN ('completed', 'failed', 'cancelled') AND j.finished_at >= now() - interval '24 hours'
)
SELECT w.period,
       a.finished,
       a.completed,
       a.failed,
       a.cancelled,
       a.poll_timeouts,
       round(a.poll_timeouts / nullif(a.finished, 0)::numeric, 4) AS timeout_rate,
       a.retried,
       round(a.retried / nullif(a.finished, 0)::numeric, 4) AS retry_rate,
       round(a.p50::numeric, 3) AS p50_seconds,
       round(a.p95::numeric, 3) AS p95_seconds,
       coalesce(k.by_kind, '{}'::jsonb) AS failures_by_kind,
       fb.delivered AS feedback_delivered,
       fb.failed AS feedback_failed,
       fb.good AS feedback_good,
       fb.bad AS feedback_bad,
       fb.good_ratio AS feedback_good_ratio,
       u.by_site AS unserved_by_site
FROM (VALUES (1, '1 hour'::text, false), (2, '24 hours'::text, true)) AS w(ord, period, whole_day)
CROSS JOIN LATERAL (
  SELECT count(*) AS finished,
         count(*) FILTER (WHERE f.state = 'completed') AS completed,
         count(*) FILTER (WHERE f.state = 'failed') AS failed,
         count(*) FILTER (WHERE f.state = 'cancelled') AS cancelled,
         count(*) FILTER (WHERE f.hit_poll_timeout) AS poll_timeouts,
         count(*) FILTER (WHERE f.retried) AS retried,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY f.seconds) FILTER (WHERE f.state = 'completed') AS p50,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY f.seconds) FILTER (WHERE f.state = 'completed') AS p95
  FROM finished f
  WHERE w.whole_day OR f.in_last_hour
) AS a
CROSS JOIN LATERAL (
  SELECT jsonb_object_agg(c.error_kind, c.jobs) AS by_kind
  FROM (SELECT f.error_kind, count(*) AS jobs
        FROM finished f
        WHERE (w.whole_day OR f.in_last_hour) AND f.state = 'failed'
        GROUP BY f.error_kind) AS c
) AS k
LEFT JOIN uppzy.chat_feedback_health fb ON fb.period = w.period
CROSS JOIN (
  SELECT coalesce(jsonb_object_agg(coalesce(q.site_id, '(default)'), q.queued + q.retrying), '{}'::jsonb)
         AS by_site
  FROM uppzy.site_queues q
  WHERE NOT q.served AND q.queued + q.retrying > 0
) AS u
ORDER BY w.ord;

CREATE OR REPLACE VIEW uppzy.site_polling_health AS
SELECT site_id,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE error_kind = 'poll_timeout') AS poll_timeouts,
       round(avg(polls) FILTER (WHERE state = 'completed'), 2) AS status_calls_per_completed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (answer_seen_after_ms - answer_ready_after_ms) / 1000.0)
         FILTER (WHERE answer_seen_after_ms IS NOT NULL) AS seen_gap_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY (answer_seen_after_ms - answer_ready_after_ms) / 1000.0)
         FILTER (WHERE answer_seen_after_ms IS NOT NULL) AS seen_gap_p95_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY answer_seen_after_ms / 1000.0)
         FILTER (WHERE answer_seen_after_ms IS NOT NULL) AS answer_seen_p50_s
FROM uppzy.chat_jobs
WHERE finished_at > now() - interval '1 hour' AND phase IN ('completed', 'failed', 'cancelled')
GROUP BY site_id;

CREATE OR REPLACE FUNCTION uppzy.retry_failed(error_kind text DEFAULT NULL, since interval DEFAULT NULL)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT uppzy.retry_jobs(coalesce(array_agg(j.id), '{}'))
  FROM uppzy.chat_jobs j
  WHERE j.phase = 'failed'
    AND (retry_failed.error_kind IS NULL OR j.error_kind = retry_failed.error_kind)
    AND (retry_failed.since IS NULL OR j.finished_at >= now() - retry_failed.since);
$$;

CREATE OR REPLACE FUNCTION uppzy.purge_jobs(state text, older_than interval, batch_size integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  deleted integer;
BEGIN
  IF purge_jobs.state IS NULL OR purge_jobs.state NOT IN ('completed', 'failed', 'cancelled') THEN
    RAISE EXCEPTION 'purge_jobs: state must be completed, failed or cancelled (got %)',
      coalesce(purge_jobs.state, 'NULL') USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF purge_jobs.older_than IS NULL OR purge_jobs.older_than < interval '0' THEN
    RAISE EXCEPTION 'purge_jobs: older_than must be a positive interval'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF purge_jobs.batch_size IS NULL OR purge_jobs.batch_size NOT BETWEEN 1 AND 100000 THEN
    RAISE EXCEPTION 'purge_jobs: batch_size must be from 1 to 100000 (got %)', purge_jobs.batch_size
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  DELETE FROM uppzy.chat_jobs AS j
  WHERE j.id IN (
    SELECT c.id FROM uppzy.chat_jobs c
    WHERE c.phase = purge_jobs.state AND c.phase IN ('completed', 'failed', 'cancelled') AND c.finished_at < now() - purge_jobs.older_than
    ORDER BY c.finished_at
    LIMIT purge_jobs.batch_size
    FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END;
$$;
