-- roles.sql: the three database roles, applied by `uppzy-worker migrate --with-roles` after the
-- numbered migrations (this file has no number, so plain `migrate` skips it). Safe to run again: it
-- creates the roles only if they are missing, then resets their privileges in this database to
-- exactly what is granted below.
--
-- The roles are NOLOGIN: grant them to the login users you create, e.g.
--   CREATE ROLE webapp LOGIN PASSWORD '...' IN ROLE uppzy_app;
--   CREATE ROLE worker LOGIN PASSWORD '...' IN ROLE uppzy_worker;
--   GRANT uppzy_operator TO alice;
-- Roles are cluster-wide; the privileges below are granted in the current database only.
--
--   uppzy_app       INSERT jobs (the columns an app sets), SELECT jobs, request cancellation
--                   (UPDATE of cancel_requested_at only). It cannot change states, answers or errors.
--   uppzy_operator  SELECT the views, the incidents and every job column except the message and answer
--                   text; EXECUTE retry_jobs, retry_failed, cancel_jobs, purge_jobs, resolve_incident,
--                   resolve_all_incidents. No INSERT, UPDATE or DELETE on any table.
--   uppzy_worker    what `uppzy-worker run` needs: SELECT and UPDATE jobs, SELECT and INSERT incidents,
--                   SELECT schema_migrations and chat_job_stats (metrics), EXECUTE purge_jobs (retention),
--                   its heartbeat row in uppzy.workers, SELECT and UPDATE of the feedback and session
--                   close rows it delivers. LISTEN/NOTIFY need no grant. Apply migrations as the owner,
--                   not as uppzy_worker.
-- Ratings and session closes (0003): uppzy_app may INSERT them (the columns an app sets) and EXECUTE
-- uppzy.rate_job / uppzy.close_session; uppzy_operator reads their views. Live workers (0004):
-- uppzy_operator reads uppzy.workers. Sites (0008): uppzy_operator edits uppzy.sites with plain SQL
-- (SELECT, INSERT, UPDATE, DELETE) and reads uppzy.site_queues and uppzy.live_worker_sites; uppzy_app
-- may set site_id when it inserts a job, a rating or a close, and EXECUTE uppzy.close_session(text,
-- text); uppzy_worker reads uppzy.sites (its heartbeat writes uppzy.workers.sites). Budgets (0010):
-- uppzy_worker reads and writes uppzy.site_budgets and reads uppzy.site_limits and
-- uppzy.live_worker_sites (a 429's fleet rate); uppzy_operator reads the first two. Shared gauges
-- (0014): uppzy_worker reads and writes uppzy.queue_gauges; uppzy_operator reads it.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['uppzy_app', 'uppzy_operator', 'uppzy_worker'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by a concurrent run (another database of the same cluster)
      END;
    END IF;
  END LOOP;
END;
$$;

-- Start from nothing in this database, so that running this file again converges.
REVOKE ALL ON ALL TABLES IN SCHEMA uppzy FROM uppzy_app, uppzy_operator, uppzy_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA uppzy FROM uppzy_app, uppzy_operator, uppzy_worker;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA uppzy FROM uppzy_app, uppzy_operator, uppzy_worker;
GRANT USAGE ON SCHEMA uppzy TO uppzy_app, uppzy_operator, uppzy_worker;

-- uppzy_app
GRANT SELECT ON uppzy.chat_jobs TO uppzy_app;
GRANT INSERT (job_key, session_id, message, response_language, metadata, priority, run_at, max_attempts)
  ON uppzy.chat_jobs TO uppzy_app;
GRANT UPDATE (cancel_requested_at) ON uppzy.chat_jobs TO uppzy_app;

-- uppzy_operator: every job column but the text of the question and the answer.
DO $$
DECLARE
  cols text;
BEGIN
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
  FROM pg_attribute
  WHERE attrelid = 'uppzy.chat_jobs'::regclass AND attnum > 0 AND NOT attisdropped
    AND attname NOT IN ('message', 'answer');
  EXECUTE format('GRANT SELECT (%s) ON uppzy.chat_jobs TO uppzy_operator', cols);
END;
$$;
GRANT SELECT ON uppzy.chat_job_stats, uppzy.chat_job_health, uppzy.chat_job_failures TO uppzy_operator;
GRANT SELECT ON uppzy.incidents TO uppzy_operator;
GRANT EXECUTE ON FUNCTION uppzy.retry_jobs(bigint[]), uppzy.retry_failed(text, interval),
  uppzy.cancel_jobs(bigint[]), uppzy.purge_jobs(text, interval, integer), uppzy.resolve_incident(bigint),
  uppzy.resolve_all_incidents() TO uppzy_operator;

-- uppzy_worker
GRANT SELECT, UPDATE ON uppzy.chat_jobs TO uppzy_worker;
GRANT SELECT, INSERT ON uppzy.incidents TO uppzy_worker;
GRANT SELECT ON uppzy.chat_job_stats TO uppzy_worker;
GRANT EXECUTE ON FUNCTION uppzy.purge_jobs(text, interval, integer) TO uppzy_worker;

-- uppzy.schema_migrations exists when `uppzy-worker migrate` applied the schema (not with plain psql).
DO $$
BEGIN
  IF to_regclass('uppzy.schema_migrations') IS NOT NULL THEN
    GRANT SELECT ON uppzy.schema_migrations TO uppzy_operator, uppzy_worker;
  END IF;
END;
$$;

-- Ratings and session closes (migrations/0003_feedback.sql) and live workers (0004_workers.sql), when
-- those migrations are applied.
DO $$
BEGIN
  IF to_regclass('uppzy.chat_feedback') IS NOT NULL THEN
    GRANT SELECT ON uppzy.chat_feedback, uppzy.session_closes TO uppzy_app;
    GRANT INSERT (job_id, session_id, request_id, feedback, comment) ON uppzy.chat_feedback TO uppzy_app;
    GRANT INSERT (session_id) ON uppzy.session_closes TO uppzy_app;
    GRANT EXECUTE ON FUNCTION uppzy.rate_job(bigint, text, text), uppzy.close_session(text) TO uppzy_app;
    GRANT SELECT ON uppzy.chat_feedback, uppzy.session_closes, uppzy.deliveries, uppzy.delivery_failures,
      uppzy.chat_feedback_health TO uppzy_operator;
    GRANT SELECT, UPDATE ON uppzy.chat_feedback, uppzy.session_closes TO uppzy_worker;
  END IF;
  IF to_regclass('uppzy.workers') IS NOT NULL THEN
    GRANT SELECT ON uppzy.workers TO uppzy_operator;
    GRANT SELECT, INSERT, UPDATE ON uppzy.workers TO uppzy_worker;
  END IF;
  IF to_regclass('uppzy.sites') IS NOT NULL THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON uppzy.sites TO uppzy_operator;
    GRANT SELECT ON uppzy.site_queues, uppzy.live_worker_sites TO uppzy_operator;
    GRANT INSERT (site_id) ON uppzy.chat_jobs, uppzy.chat_feedback, uppzy.session_closes TO uppzy_app;
    GRANT EXECUTE ON FUNCTION uppzy.close_session(text, text) TO uppzy_app;
    GRANT SELECT ON uppzy.sites TO uppzy_worker;
  END IF;
  IF to_regclass('uppzy.site_polling_health') IS NOT NULL THEN
    GRANT SELECT ON uppzy.site_polling_health TO uppzy_operator;
  END IF;
  IF to_regclass('uppzy.site_budgets') IS NOT NULL THEN
    GRANT SELECT, INSERT, UPDATE ON uppzy.site_budgets TO uppzy_worker;
    GRANT SELECT ON uppzy.site_limits, uppzy.live_worker_sites TO uppzy_worker;
    GRANT SELECT ON uppzy.site_budgets, uppzy.site_limits TO uppzy_operator;
  END IF;
  IF to_regclass('uppzy.queue_gauges') IS NOT NULL THEN
    GRANT SELECT, INSERT, UPDATE ON uppzy.queue_gauges TO uppzy_worker;
    GRANT SELECT ON uppzy.queue_gauges TO uppzy_operator;
  END IF;
END;
$$;
