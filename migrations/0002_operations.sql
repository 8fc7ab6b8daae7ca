-- 0002: operations. Cancellation requests, the views operators read (psql, `uppzy-worker stats`,
-- Prometheus gauges and any dashboard all read the same numbers), the indexes that keep them cheap on
-- millions of rows, and the operator functions (retry, cancel, purge, resolve incidents).
--
-- The functions are SECURITY DEFINER with a pinned search_path: a role that may EXECUTE them (see
-- migrations/roles.sql, applied by `uppzy-worker migrate --with-roles`) changes rows only through them.
-- EXECUTE is revoked from PUBLIC.

-- An app or an operator asks for a job to be cancelled by setting this column:
--   UPDATE uppzy.chat_jobs SET cancel_requested_at = now() WHERE id = 42;
-- A queued or retrying job is cancelled at once by the trigger below. A submitting or polling job is
-- finished as `cancelled` by the worker holding it, within seconds.
ALTER TABLE uppzy.chat_jobs ADD COLUMN cancel_requested_at timestamptz;

COMMENT ON COLUMN uppzy.chat_jobs.cancel_requested_at IS
  'Set to request cancellation. queued/retrying rows are cancelled at once; in-flight rows by their worker.';

-- ---------------------------------------------------------------------------------------------------
-- Indexes for the views, retention and the failure listing.
--
-- Finished rows (the bulk of the table) by state and finish time: purge (state = $1 AND finished_at <
-- $2), the failure listing (state = 'failed' ORDER BY finished_at DESC), and per-state counts as
-- index-only scans.
CREATE INDEX chat_jobs_finished_idx ON uppzy.chat_jobs (state, finished_at)
  WHERE state IN ('completed', 'failed', 'cancelled');

-- Finished rows by finish time alone: the health windows (finished_at >= now() - interval '24
-- hours') read it as one range whose physical order follows finish time, so the planner picks it over
-- a sequential scan of the whole table.
CREATE INDEX chat_jobs_finished_at_idx ON uppzy.chat_jobs (finished_at)
  WHERE state IN ('completed', 'failed', 'cancelled');

-- Unfinished rows by state and age: queue depth and the oldest waiting job. Small: it holds only the
-- rows that are waiting or in flight.
CREATE INDEX chat_jobs_active_state_idx ON uppzy.chat_jobs (state, created_at)
  WHERE state IN ('queued', 'submitting', 'polling', 'retrying');

-- ---------------------------------------------------------------------------------------------------
-- Cancellation: a row that has cancel_requested_at set never waits in queued or retrying. This covers
-- the app's plain UPDATE, uppzy.cancel_jobs(), and a worker handing a row back (401, shutdown) after a
-- cancellation was requested while it held it. In-flight rows wake the workers ('cancel').
CREATE FUNCTION uppzy.chat_jobs_apply_cancel_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state IN ('queued', 'retrying') THEN
    NEW.state := 'cancelled';
    NEW.finished_at := now();
    NEW.error_kind := 'cancelled';
    NEW.last_error := 'cancelled on request while waiting for a submission';
    NEW.last_http_status := NULL;
    NEW.locked_by := NULL;
    NEW.lease_expires_at := NULL;
    NEW.updated_at := now();
    NEW.errors := NEW.errors || jsonb_build_array(jsonb_build_object(
      'attempt', NEW.attempts,
      'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'kind', 'cancelled',
      'http_status', NULL,
      'message', 'cancelled on request while waiting for a submission',
      'request_id', NULL));
  ELSIF NEW.state IN ('submitting', 'polling') THEN
    IF TG_OP = 'INSERT' OR OLD.cancel_requested_at IS NULL THEN
      PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'cancel');
    END IF;
  ELSIF TG_OP = 'UPDATE' AND OLD.state = NEW.state AND OLD.cancel_requested_at IS NULL THEN
    -- Already finished: nothing to cancel; leave the row as it was.
    NEW.cancel_requested_at := NULL;
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER chat_jobs_apply_cancel_request
  BEFORE INSERT OR UPDATE OF state, cancel_requested_at ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.cancel_requested_at IS NOT NULL)
  EXECUTE FUNCTION uppzy.chat_jobs_apply_cancel_request();

-- The app hears about a job cancelled this way like any other finish. chat_jobs_notify_finished fires
-- only when `state` is in the UPDATE's SET list, and here the trigger above changed it; when both fire,
-- NOTIFY delivers the identical payload once.
CREATE TRIGGER chat_jobs_notify_cancelled_on_request
  AFTER UPDATE OF cancel_requested_at ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.state = 'cancelled' AND OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION uppzy.chat_jobs_notify_finished();

-- ---------------------------------------------------------------------------------------------------
-- Views. Each branch names its state as a literal so it reads only its partial index.

-- One row per state: how many jobs, and oldest_age. For queued, submitting, polling and retrying,
-- oldest_age is how long the oldest of them has existed (now() - created_at): the age of the oldest
-- waiting job. For completed, failed and cancelled it is how long the oldest finished row has been
-- kept (now() - finished_at): retention at work. NULL when there is no row in that state.
CREATE VIEW uppzy.chat_job_stats AS
          SELECT 'queued'::text AS state, count(*) AS jobs, now() - min(created_at) AS oldest_age
            FROM uppzy.chat_jobs WHERE state = 'queued'
UNION ALL SELECT 'submitting', count(*), now() - min(created_at) FROM uppzy.chat_jobs WHERE state = 'submitting'
UNION ALL SELECT 'polling', count(*), now() - min(created_at) FROM uppzy.chat_jobs WHERE state = 'polling'
UNION ALL SELECT 'retrying', count(*), now() - min(created_at) FROM uppzy.chat_jobs WHERE state = 'retrying'
UNION ALL SELECT 'completed', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE state = 'completed'
UNION ALL SELECT 'failed', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE state = 'failed'
UNION ALL SELECT 'cancelled', count(*), now() - min(finished_at) FROM uppzy.chat_jobs WHERE state = 'cancelled';

COMMENT ON VIEW uppzy.chat_job_stats IS
  'Jobs per state; oldest_age = now() - created_at (unfinished states) or now() - finished_at (finished).';

-- One row per window ('1 hour', '24 hours') of jobs finished in it.
--   poll_timeouts: jobs whose errors history has kind poll_timeout at least once; timeout_rate =
--   poll_timeouts / finished. retried: jobs with attempts > 1; retry_rate = retried / finished (rates
--   are NULL when nothing finished). p50_seconds / p95_seconds: created_at to finished_at of the
--   completed jobs (time to answer, queue wait included). failures_by_kind: {"error_kind": count} of
--   the failed ones.
CREATE VIEW uppzy.chat_job_health AS
WITH finished AS MATERIALIZED (
  -- One index range scan of the last 24 hours; the last hour is a subset of it.
  SELECT j.state,
         j.error_kind,
         j.attempts > 1 AS retried,
         j.errors @> '[{"kind": "poll_timeout"}]' AS hit_poll_timeout,
         extract(epoch FROM j.finished_at - j.created_at)::float8 AS seconds,
         j.finished_at >= now() - interval '1 hour' AS in_last_hour
  FROM uppzy.chat_jobs j
  WHERE j.state IN ('completed', 'failed', 'cancelled') AND j.finished_at >= now() - interval '24 hours'
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
       coalesce(k.by_kind, '{}'::jsonb) AS failures_by_kind
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
ORDER BY w.ord;

COMMENT ON VIEW uppzy.chat_job_health IS
  'Finished jobs in the last hour and 24 hours: outcomes, timeout and retry rates, p50/p95 time to answer.';

-- Failed jobs, newest first, with their whole error history. Never the message or the answer.
CREATE VIEW uppzy.chat_job_failures AS
SELECT id, job_key, session_id, error_kind, last_error, last_http_status, attempts, max_attempts,
       request_id, errors, created_at, finished_at
FROM uppzy.chat_jobs
WHERE state = 'failed'
ORDER BY finished_at DESC;

COMMENT ON VIEW uppzy.chat_job_failures IS 'Failed jobs, newest first; no message or answer text.';

-- ---------------------------------------------------------------------------------------------------
-- Operator functions.

-- Requeues finished jobs (completed, failed or cancelled): state queued, attempts 0, run at once. The
-- errors history is kept and gains {"kind": "operator_retry", "message": "requeued by an operator"}.
-- Jobs that are not finished are left alone. Returns how many were requeued, and wakes the workers.
CREATE FUNCTION uppzy.retry_jobs(ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  requeued integer;
BEGIN
  UPDATE uppzy.chat_jobs AS j
  SET state = 'queued',
      attempts = 0,
      run_at = now(),
      finished_at = NULL,
      cancel_requested_at = NULL,
      request_id = NULL,
      submitted_at = NULL,
      poll_deadline = NULL,
      polls = 0,
      answer = NULL,
      result = NULL,
      error_kind = NULL,
      last_error = NULL,
      last_http_status = NULL,
      locked_by = NULL,
      lease_expires_at = NULL,
      updated_at = now(),
      errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempts,
        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'kind', 'operator_retry',
        'http_status', NULL,
        'message', 'requeued by an operator',
        'request_id', NULL))
  WHERE j.id = ANY (retry_jobs.ids) AND j.state IN ('completed', 'failed', 'cancelled');
  GET DIAGNOSTICS requeued = ROW_COUNT;
  IF requeued > 0 THEN
    PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'retry');
  END IF;
  RETURN requeued;
END;
$$;

-- Requeues failed jobs, optionally only those with this error_kind and/or finished within `since`.
CREATE FUNCTION uppzy.retry_failed(error_kind text DEFAULT NULL, since interval DEFAULT NULL)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT uppzy.retry_jobs(coalesce(array_agg(j.id), '{}'))
  FROM uppzy.chat_jobs j
  WHERE j.state = 'failed'
    AND (retry_failed.error_kind IS NULL OR j.error_kind = retry_failed.error_kind)
    AND (retry_failed.since IS NULL OR j.finished_at >= now() - retry_failed.since);
$$;

-- Cancels jobs that are not finished. queued/retrying: cancelled at once (finished_at set,
-- error_kind 'cancelled'). submitting/polling: cancel_requested_at is set and the worker holding the
-- row finishes it as cancelled within seconds. Returns how many were cancelled or asked to cancel.
CREATE FUNCTION uppzy.cancel_jobs(ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  touched integer;
BEGIN
  UPDATE uppzy.chat_jobs AS j
  SET cancel_requested_at = coalesce(j.cancel_requested_at, now()), updated_at = now()
  WHERE j.id = ANY (cancel_jobs.ids) AND j.state IN ('queued', 'retrying', 'submitting', 'polling');
  GET DIAGNOSTICS touched = ROW_COUNT;
  RETURN touched;
END;
$$;

-- Deletes one batch of finished rows in `state` that finished before now() - older_than, oldest first.
-- Rows locked by someone else are skipped (several workers may run retention at once). Returns how
-- many were deleted: call again until it returns less than batch_size.
CREATE FUNCTION uppzy.purge_jobs(state text, older_than interval, batch_size integer DEFAULT 1000)
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
    WHERE c.state = purge_jobs.state AND c.finished_at < now() - purge_jobs.older_than
    ORDER BY c.finished_at
    LIMIT purge_jobs.batch_size
    FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END;
$$;

-- Resolves one open incident; false when no open incident has this id. Workers resume within a second.
CREATE FUNCTION uppzy.resolve_incident(id bigint) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH r AS (
    UPDATE uppzy.incidents i SET resolved_at = now()
    WHERE i.id = resolve_incident.id AND i.resolved_at IS NULL
    RETURNING 1)
  SELECT count(*) > 0 FROM r;
$$;

-- Resolves every open incident; returns how many.
CREATE FUNCTION uppzy.resolve_all_incidents() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH r AS (UPDATE uppzy.incidents i SET resolved_at = now() WHERE i.resolved_at IS NULL RETURNING 1)
  SELECT count(*)::integer FROM r;
$$;

REVOKE EXECUTE ON FUNCTION uppzy.retry_jobs(bigint[]), uppzy.retry_failed(text, interval),
  uppzy.cancel_jobs(bigint[]), uppzy.purge_jobs(text, interval, integer), uppzy.resolve_incident(bigint),
  uppzy.resolve_all_incidents() FROM PUBLIC;
