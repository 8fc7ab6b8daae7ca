-- 0008: many Uppzy sites in one deployment (issue 10, the database side).
--
--   uppzy.sites                 one row per Uppzy site: its limits, poll settings and an operator's pause.
--                               Operators edit it with plain SQL; every INSERT or UPDATE wakes the workers
--                               (so a resume is seen at once).
--   site_id on the work         chat_jobs, chat_feedback and session_closes get a nullable site_id, a
--                               foreign key to uppzy.sites. NULL means the worker's default site
--                               (UPPZY_SITE_ID): a single-site deployment needs no row in uppzy.sites
--                               and keeps working unchanged. A rating made from a job takes the job's
--                               site; uppzy.close_session(session_id, site_id) closes a site's session.
--   the claim indexes           each claimable partial index is split in two: the NULL-site rows (the
--                               default site, as fast as before) and the rows of named sites, by site,
--                               so a claim reads each site's best rows directly whatever the other
--                               sites' backlogs are.
--   uppzy.workers.sites         the sites a live worker holds keys for (and so claims for).
--   uppzy.site_queues           per site: waiting and in-flight work, the oldest wait, the pause, and
--                               whether any live worker serves the site. chat_job_health gains
--                               unserved_by_site: waiting jobs whose site no live worker serves.
--
-- Deleting or renaming a site (ON DELETE RESTRICT, ON UPDATE CASCADE) reads the three tables whole:
-- there is no index on site_id alone, because every state change of a job would add an entry to it
-- (see 0005). Sites are renamed or deleted rarely; the claim never needs such an index.
--
-- Locking: ALTER TABLE takes an ACCESS EXCLUSIVE lock on the three tables until this file commits;
-- adding a nullable column is instant, the foreign keys read each table once (all NULL), and the
-- claim indexes are rebuilt from the claimable rows only.

-- ---------------------------------------------------------------------------------------------------
-- Sites.

CREATE TABLE uppzy.sites (
  site_id          text PRIMARY KEY,
  requests_per_s   numeric,      -- requests per second to Uppzy across every worker; NULL: no limit
  burst            integer,      -- requests above the rate a moment may take; NULL: the worker's choice
  max_in_flight    integer,      -- jobs submitted and not finished across every worker; NULL: no cap
  poll_interval_ms integer,      -- overrides UPPZY_POLL_INTERVAL_MS when not NULL
  poll_timeout_ms  integer,      -- overrides UPPZY_POLL_TIMEOUT_MS when not NULL
  paused_at        timestamptz,  -- an operator's pause: no new Uppzy calls for this site while set
  paused_reason    text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),

  -- The rule of UPPZY_SITE_ID (src/runtime/config.cc): 1 to 128 ASCII letters, digits, '-', '_' or
  -- '.', so that it is safe in a URL path and as a file name in UPPZY_API_KEYS_DIR; '.' and '..' are
  -- not file names.
  CONSTRAINT sites_site_id_valid
    CHECK (site_id ~ '^[A-Za-z0-9._-]{1,128}$' AND site_id NOT IN ('.', '..')),
  -- NaN and Infinity are refused too (NaN sorts above Infinity in numeric).
  CONSTRAINT sites_requests_per_s_positive
    CHECK (requests_per_s > 0 AND requests_per_s < 'Infinity'::numeric),
  CONSTRAINT sites_burst_positive CHECK (burst >= 1),
  CONSTRAINT sites_max_in_flight_positive CHECK (max_in_flight >= 1),
  -- The ranges of UPPZY_POLL_INTERVAL_MS and UPPZY_POLL_TIMEOUT_MS (include/uppzy/config.h).
  CONSTRAINT sites_poll_interval_range CHECK (poll_interval_ms BETWEEN 10 AND 600000),
  CONSTRAINT sites_poll_timeout_range CHECK (poll_timeout_ms BETWEEN 100 AND 3600000),
  CONSTRAINT sites_paused_at_finite CHECK (isfinite(paused_at)),
  CONSTRAINT sites_paused_reason_needs_pause CHECK (paused_reason IS NULL OR paused_at IS NOT NULL),
  CONSTRAINT sites_paused_reason_length CHECK (length(paused_reason) <= 500)
);

COMMENT ON TABLE uppzy.sites IS
  'One row per Uppzy site: limits, poll settings, pause. Jobs with site_id NULL belong to each worker''s '
  'UPPZY_SITE_ID and need no row here.';

CREATE FUNCTION uppzy.sites_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;

CREATE TRIGGER sites_touch
  BEFORE UPDATE ON uppzy.sites
  FOR EACH ROW EXECUTE FUNCTION uppzy.sites_touch();

-- A new site, a changed limit or a resume: wake the workers (one NOTIFY per statement, as for a new job).
CREATE TRIGGER sites_wake
  AFTER INSERT OR UPDATE ON uppzy.sites
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.chat_jobs_wake();

-- ---------------------------------------------------------------------------------------------------
-- The site of each piece of work. NULL: the worker's default site.

ALTER TABLE uppzy.chat_jobs ADD COLUMN site_id text
  CONSTRAINT chat_jobs_site_known REFERENCES uppzy.sites (site_id) ON UPDATE CASCADE ON DELETE RESTRICT;
ALTER TABLE uppzy.chat_feedback ADD COLUMN site_id text
  CONSTRAINT chat_feedback_site_known REFERENCES uppzy.sites (site_id) ON UPDATE CASCADE ON DELETE RESTRICT;
ALTER TABLE uppzy.session_closes ADD COLUMN site_id text
  CONSTRAINT session_closes_site_known REFERENCES uppzy.sites (site_id) ON UPDATE CASCADE ON DELETE RESTRICT;

COMMENT ON COLUMN uppzy.chat_jobs.site_id IS
  'The Uppzy site (uppzy.sites) this job is for; NULL: the default site of the worker (UPPZY_SITE_ID).';

-- The claim indexes, split: the NULL-site rows keep their index (same name, same columns), the rows of
-- named sites get one ordered by site first. A claim for one site reads the first rows of its range.
DROP INDEX uppzy.chat_jobs_claimable_idx;
CREATE INDEX chat_jobs_claimable_idx ON uppzy.chat_jobs (priority DESC, run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NULL;
CREATE INDEX chat_jobs_site_claimable_idx ON uppzy.chat_jobs (site_id, priority DESC, run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NOT NULL;

DROP INDEX uppzy.chat_feedback_claimable_idx;
CREATE INDEX chat_feedback_claimable_idx ON uppzy.chat_feedback (run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NULL;
CREATE INDEX chat_feedback_site_claimable_idx ON uppzy.chat_feedback (site_id, run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NOT NULL;

DROP INDEX uppzy.session_closes_claimable_idx;
CREATE INDEX session_closes_claimable_idx ON uppzy.session_closes (run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NULL;
CREATE INDEX session_closes_site_claimable_idx ON uppzy.session_closes (site_id, run_at, id)
  WHERE state IN ('queued', 'retrying') AND site_id IS NOT NULL;

-- A rating made from a job (INSERT with job_id, or uppzy.rate_job) takes the job's site as well. A
-- site_id given that is not the job's is refused, like a session_id or request_id that is not.
CREATE OR REPLACE FUNCTION uppzy.chat_feedback_from_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  job record;
BEGIN
  IF NEW.job_id IS NULL THEN
    RETURN NEW;  -- the app gives session_id, request_id and site_id itself
  END IF;
  SELECT j.state, j.session_id, j.request_id, j.site_id INTO job FROM uppzy.chat_jobs j WHERE j.id = NEW.job_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'cannot rate job %: there is no such job in uppzy.chat_jobs', NEW.job_id
      USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'chat_feedback_job_completed';
  END IF;
  IF job.state <> 'completed' THEN
    RAISE EXCEPTION 'cannot rate job %: its state is %, not completed (Uppzy accepts feedback only for completed requests)',
      NEW.job_id, job.state
      USING ERRCODE = 'check_violation', CONSTRAINT = 'chat_feedback_job_completed';
  END IF;
  IF NEW.session_id IS DISTINCT FROM job.session_id AND NEW.session_id IS NOT NULL
     OR NEW.request_id IS DISTINCT FROM job.request_id AND NEW.request_id IS NOT NULL THEN
    RAISE EXCEPTION 'cannot rate job %: the session_id or request_id given is not the job''s', NEW.job_id
      USING ERRCODE = 'check_violation', CONSTRAINT = 'chat_feedback_job_completed';
  END IF;
  IF NEW.site_id IS DISTINCT FROM job.site_id AND NEW.site_id IS NOT NULL THEN
    RAISE EXCEPTION 'cannot rate job %: the site_id given (%) is not the job''s', NEW.job_id, NEW.site_id
      USING ERRCODE = 'check_violation', CONSTRAINT = 'chat_feedback_job_completed';
  END IF;
  NEW.session_id := job.session_id;
  NEW.request_id := job.request_id;
  NEW.site_id := job.site_id;
  RETURN NEW;
END;
$$;

-- Close a session of one site (NULL: the default site): returns the id of the close request. A close
-- of this session of this site still waiting or being sent is reused; otherwise a new one is queued.
-- uppzy.close_session(session_id) is this with the default site.
CREATE FUNCTION uppzy.close_session(session_id text, site_id text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH pending AS (
    SELECT c.id FROM uppzy.session_closes c
    WHERE c.session_id = close_session.session_id AND c.site_id IS NOT DISTINCT FROM close_session.site_id
      AND c.state IN ('queued', 'retrying', 'sending')
    ORDER BY c.id LIMIT 1
  ), added AS (
    INSERT INTO uppzy.session_closes (session_id, site_id)
    SELECT close_session.session_id, close_session.site_id WHERE NOT EXISTS (SELECT 1 FROM pending)
    RETURNING id
  )
  SELECT id FROM pending UNION ALL SELECT id FROM added
$$;

CREATE OR REPLACE FUNCTION uppzy.close_session(session_id text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT uppzy.close_session(close_session.session_id, NULL::text)
$$;

REVOKE EXECUTE ON FUNCTION uppzy.close_session(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------------
-- Workers: the sites each one holds keys for. NULL (a worker from before 0008): its site_id alone.
ALTER TABLE uppzy.workers ADD COLUMN sites text[];

COMMENT ON COLUMN uppzy.workers.sites IS
  'The sites this worker holds keys for and claims work of; NULL: only site_id (older workers).';

-- Live workers and the sites they serve: a worker is live while it has not stopped and its heartbeat is
-- younger than its lease (as on the dashboard).
CREATE VIEW uppzy.live_worker_sites AS
SELECT w.id AS worker_id, s.site_id
FROM uppzy.workers w
CROSS JOIN LATERAL unnest(coalesce(w.sites, ARRAY[w.site_id])) AS s(site_id)
WHERE w.stopped_at IS NULL AND w.heartbeat_at >= now() - w.lease_ms * interval '1 millisecond';

-- One row for the default site (site_id NULL, is_default true: the jobs with no site, served by any
-- live worker) and one per row of uppzy.sites. Counts of jobs queued, retrying, submitting and polling,
-- how long the oldest queued or retrying job has existed (NULL: none), the pause, and `served`: whether
-- any live worker claims this site's work. A site with waiting jobs and served = false is stuck until a
-- worker with its key starts.
CREATE VIEW uppzy.site_queues AS
WITH q AS (
  SELECT j.site_id,
         count(*) FILTER (WHERE j.state = 'queued') AS queued,
         count(*) FILTER (WHERE j.state = 'retrying') AS retrying,
         count(*) FILTER (WHERE j.state = 'submitting') AS submitting,
         count(*) FILTER (WHERE j.state = 'polling') AS polling,
         now() - min(j.created_at) FILTER (WHERE j.state IN ('queued', 'retrying')) AS oldest_queued_age
  FROM uppzy.chat_jobs j
  WHERE j.state IN ('queued', 'submitting', 'polling', 'retrying')
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

COMMENT ON VIEW uppzy.site_queues IS
  'Per site (NULL: the default site): jobs waiting and in flight, the oldest wait, the pause, and '
  'whether any live worker serves it.';

-- chat_job_health (0002, 0006) gains one column, the same in both windows: {"site": jobs} of the
-- queued and retrying jobs whose site no live worker serves ('{}' when every site is served; the
-- default site, "(default)", only when no worker is live at all).
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
