-- 0003: feedback and session close, delivered by the worker with the jobs' guarantees (same claim with
-- SKIP LOCKED, leases, fencing, retry policy and 401/403 incidents), and the operators' views of them.
--
-- Two tables, one bookkeeping shape. uppzy.chat_feedback holds one row per rating, uppzy.session_closes
-- one row per close request. We chose two tables over one general "deliveries" table because their
-- rules differ and CHECK constraints can state them plainly only on separate tables: a rating needs a
-- request_id and good|bad and is unique per request; a close needs only a session_id and may repeat.
-- The app also reads its ratings by job or request without filtering on a kind column. The delivery
-- bookkeeping columns (state, run_at, attempts, max_attempts, error_kind, last_error, last_http_status,
-- errors, locked_by, lease_expires_at, delivered_http_status, delivered_at, finished_at, created_at,
-- updated_at) have the same names, types, defaults and rules in both tables, so one store code path
-- serves both (its queries differ in the table name only), and the view uppzy.deliveries is their union.
--
-- States: queued -> sending (claimed: attempts + 1, locked_by, lease) -> delivered | retrying | failed.
-- retrying -> sending again at run_at. A sending row whose lease runs out is rescued to retrying (or
-- failed when no attempt is left) with error_kind lease_expired: both calls are safe to repeat (Uppzy
-- acknowledges a second rating of a request without a new timestamp; closing a closed session is fine).
-- 401/403 hand the row back uncharged (queued or retrying, the attempt returned), as for jobs.

-- One row per rating of a completed chat request.
CREATE TABLE uppzy.chat_feedback (
  id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The rated job; filled in by the app (the easy case). SET NULL so purging old jobs keeps ratings.
  job_id                bigint REFERENCES uppzy.chat_jobs (id) ON DELETE SET NULL,
  session_id            text NOT NULL,  -- taken from the job when job_id is given
  request_id            text NOT NULL,  -- taken from the job when job_id is given
  feedback              text NOT NULL,  -- 'good' or 'bad', sent to Uppzy
  comment               text,           -- the app's own note; stored, never sent (the API has no field for it)
  state                 text NOT NULL DEFAULT 'queued',
  run_at                timestamptz NOT NULL DEFAULT now(),
  attempts              int NOT NULL DEFAULT 0,
  max_attempts          int NOT NULL DEFAULT 3,
  error_kind            text,
  last_error            text,
  last_http_status      int,
  errors                jsonb NOT NULL DEFAULT '[]',
  locked_by             text,
  lease_expires_at      timestamptz,
  delivered_http_status int,          -- the HTTP status of the answer that delivered it
  delivered_at          timestamptz,  -- set exactly when state = 'delivered'
  feedback_submitted_at timestamptz,  -- from Uppzy's answer; the first acknowledgement is kept
  finished_at           timestamptz,  -- set exactly when state is delivered or failed
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),

  -- One rating per request. A second INSERT for the same request is refused by this constraint (use
  -- ON CONFLICT (request_id) DO NOTHING to ignore it); uppzy.rate_job() updates the rating instead and
  -- sends it again when it changed (see below).
  CONSTRAINT chat_feedback_one_per_request UNIQUE (request_id),
  CONSTRAINT chat_feedback_feedback_valid CHECK (feedback IN ('good', 'bad')),
  CONSTRAINT chat_feedback_state_valid
    CHECK (state IN ('queued', 'sending', 'retrying', 'delivered', 'failed')),
  CONSTRAINT chat_feedback_finished_at_iff_terminal
    CHECK ((state IN ('delivered', 'failed')) = (finished_at IS NOT NULL)),
  CONSTRAINT chat_feedback_delivered_at_iff_delivered CHECK ((state = 'delivered') = (delivered_at IS NOT NULL)),
  CONSTRAINT chat_feedback_attempts_range CHECK (attempts >= 0 AND attempts <= max_attempts),
  CONSTRAINT chat_feedback_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
  CONSTRAINT chat_feedback_waiting_has_attempt_left
    CHECK (state NOT IN ('queued', 'retrying') OR attempts < max_attempts),
  CONSTRAINT chat_feedback_sending_is_held
    CHECK (state <> 'sending' OR (locked_by IS NOT NULL AND lease_expires_at IS NOT NULL)),
  CONSTRAINT chat_feedback_session_id_length CHECK (length(session_id) BETWEEN 1 AND 255),
  CONSTRAINT chat_feedback_request_id_length CHECK (length(request_id) BETWEEN 1 AND 255),
  CONSTRAINT chat_feedback_comment_length CHECK (comment IS NULL OR length(comment) <= 4000),
  CONSTRAINT chat_feedback_errors_array CHECK (jsonb_typeof(errors) = 'array'),
  CONSTRAINT chat_feedback_failed_has_error_kind CHECK (state <> 'failed' OR error_kind IS NOT NULL),
  CONSTRAINT chat_feedback_error_kind_valid CHECK (error_kind IS NULL OR error_kind IN (
    'rate_limited', 'server_error', 'network', 'bad_request', 'unauthorized', 'forbidden',
    'invalid_response', 'lease_expired'))
) WITH (fillfactor = 80);

COMMENT ON TABLE uppzy.chat_feedback IS
  'One row per rating of a completed chat job. Apps INSERT (job_id, feedback) or call uppzy.rate_job(); '
  'uppzy-worker delivers it to Uppzy.';

-- One row per request to close a session. Closing a session that is already closed is success: a
-- repeated close is delivered again (Uppzy answers 200, or perhaps 409, which counts as delivered).
CREATE TABLE uppzy.session_closes (
  id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  session_id            text NOT NULL,
  state                 text NOT NULL DEFAULT 'queued',
  run_at                timestamptz NOT NULL DEFAULT now(),
  attempts              int NOT NULL DEFAULT 0,
  max_attempts          int NOT NULL DEFAULT 3,
  error_kind            text,
  last_error            text,
  last_http_status      int,
  errors                jsonb NOT NULL DEFAULT '[]',
  locked_by             text,
  lease_expires_at      timestamptz,
  delivered_http_status int,  -- 409 here means Uppzy reported the session already closed
  delivered_at          timestamptz,
  finished_at           timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),

  CONSTRAINT session_closes_state_valid
    CHECK (state IN ('queued', 'sending', 'retrying', 'delivered', 'failed')),
  CONSTRAINT session_closes_finished_at_iff_terminal
    CHECK ((state IN ('delivered', 'failed')) = (finished_at IS NOT NULL)),
  CONSTRAINT session_closes_delivered_at_iff_delivered CHECK ((state = 'delivered') = (delivered_at IS NOT NULL)),
  CONSTRAINT session_closes_attempts_range CHECK (attempts >= 0 AND attempts <= max_attempts),
  CONSTRAINT session_closes_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
  CONSTRAINT session_closes_waiting_has_attempt_left
    CHECK (state NOT IN ('queued', 'retrying') OR attempts < max_attempts),
  CONSTRAINT session_closes_sending_is_held
    CHECK (state <> 'sending' OR (locked_by IS NOT NULL AND lease_expires_at IS NOT NULL)),
  CONSTRAINT session_closes_session_id_length CHECK (length(session_id) BETWEEN 1 AND 255),
  CONSTRAINT session_closes_errors_array CHECK (jsonb_typeof(errors) = 'array'),
  CONSTRAINT session_closes_failed_has_error_kind CHECK (state <> 'failed' OR error_kind IS NOT NULL),
  CONSTRAINT session_closes_error_kind_valid CHECK (error_kind IS NULL OR error_kind IN (
    'rate_limited', 'server_error', 'network', 'bad_request', 'unauthorized', 'forbidden',
    'invalid_response', 'lease_expired'))
) WITH (fillfactor = 80);

COMMENT ON TABLE uppzy.session_closes IS
  'One row per request to close an Uppzy session. Apps INSERT (session_id) or call uppzy.close_session().';

-- The claim reads only claimable rows, oldest first; the indexes hold nothing else.
CREATE INDEX chat_feedback_claimable_idx ON uppzy.chat_feedback (run_at, id)
  WHERE state IN ('queued', 'retrying');
CREATE INDEX session_closes_claimable_idx ON uppzy.session_closes (run_at, id)
  WHERE state IN ('queued', 'retrying');
-- Rescue looks for sending rows whose lease ran out.
CREATE INDEX chat_feedback_held_lease_idx ON uppzy.chat_feedback (lease_expires_at) WHERE state = 'sending';
CREATE INDEX session_closes_held_lease_idx ON uppzy.session_closes (lease_expires_at) WHERE state = 'sending';
-- Ratings of a job (and ON DELETE SET NULL when a job is purged); the health windows.
CREATE INDEX chat_feedback_job_id_idx ON uppzy.chat_feedback (job_id);
CREATE INDEX chat_feedback_created_at_idx ON uppzy.chat_feedback (created_at);
CREATE INDEX chat_feedback_finished_at_idx ON uppzy.chat_feedback (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX session_closes_session_id_idx ON uppzy.session_closes (session_id);
CREATE INDEX session_closes_finished_at_idx ON uppzy.session_closes (finished_at) WHERE finished_at IS NOT NULL;

-- The easy case: INSERT (job_id, feedback) and the row takes session_id and request_id from the job.
-- A job that is unknown or not completed is refused here, with a message that names the job and its
-- state: Uppzy accepts feedback only for completed requests and would refuse it too.
CREATE FUNCTION uppzy.chat_feedback_from_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  job record;
BEGIN
  IF NEW.job_id IS NULL THEN
    RETURN NEW;  -- the app gives session_id and request_id itself
  END IF;
  SELECT j.state, j.session_id, j.request_id INTO job FROM uppzy.chat_jobs j WHERE j.id = NEW.job_id;
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
  NEW.session_id := job.session_id;
  NEW.request_id := job.request_id;
  RETURN NEW;
END;
$$;

CREATE TRIGGER chat_feedback_from_job
  BEFORE INSERT ON uppzy.chat_feedback
  FOR EACH ROW EXECUTE FUNCTION uppzy.chat_feedback_from_job();

-- Rate a job (or rate it again): returns the rating's id. Refused like the INSERT above when the job is
-- unknown or not completed. The duplicate rule: one rating per request, and the latest rating wins.
--   - No rating yet: a new row, queued for delivery.
--   - The same rating again: nothing changes (an app may retry the call safely); a comment given
--     replaces the stored one.
--   - A different rating: stored; if the earlier one already left (delivered or failed) the row is
--     queued again with a fresh attempt budget and sent again; if it is still waiting it is simply sent
--     with the new value; if it is being sent right now, the worker queues it again when that send
--     finishes. feedback_submitted_at keeps Uppzy's first acknowledgement (Uppzy acknowledges a second
--     rating of a request without a new timestamp; whether it keeps the first or the latest rating is
--     not documented).
-- A plain INSERT of a second rating is refused by chat_feedback_one_per_request instead.
CREATE FUNCTION uppzy.rate_job(job_id bigint, feedback text, comment text DEFAULT NULL) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO uppzy.chat_feedback AS f (job_id, feedback, comment)
  VALUES (rate_job.job_id, rate_job.feedback, rate_job.comment)
  ON CONFLICT (request_id) DO UPDATE
  SET feedback = EXCLUDED.feedback,
      comment = coalesce(EXCLUDED.comment, f.comment),
      job_id = coalesce(f.job_id, EXCLUDED.job_id),
      state = CASE WHEN f.state IN ('delivered', 'failed') AND f.feedback <> EXCLUDED.feedback
                   THEN 'queued' ELSE f.state END,
      attempts = CASE WHEN f.state IN ('delivered', 'failed') AND f.feedback <> EXCLUDED.feedback
                      THEN 0 ELSE f.attempts END,
      run_at = CASE WHEN f.state IN ('delivered', 'failed') AND f.feedback <> EXCLUDED.feedback
                    THEN now() ELSE f.run_at END,
      delivered_at = CASE WHEN f.state IN ('delivered', 'failed') AND f.feedback <> EXCLUDED.feedback
                          THEN NULL ELSE f.delivered_at END,
      finished_at = CASE WHEN f.state IN ('delivered', 'failed') AND f.feedback <> EXCLUDED.feedback
                         THEN NULL ELSE f.finished_at END,
      updated_at = now()
  RETURNING f.id
$$;

-- Close a session: returns the id of the close request. A close of this session still waiting or being
-- sent is reused rather than duplicated; otherwise a new one is queued (closing twice is harmless).
CREATE FUNCTION uppzy.close_session(session_id text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH pending AS (
    SELECT c.id FROM uppzy.session_closes c
    WHERE c.session_id = close_session.session_id AND c.state IN ('queued', 'retrying', 'sending')
    ORDER BY c.id LIMIT 1
  ), added AS (
    INSERT INTO uppzy.session_closes (session_id)
    SELECT close_session.session_id WHERE NOT EXISTS (SELECT 1 FROM pending)
    RETURNING id
  )
  SELECT id FROM pending UNION ALL SELECT id FROM added
$$;

-- Like the operator functions of 0002: SECURITY DEFINER with a pinned search_path, so a role allowed to
-- EXECUTE them (uppzy_app, see migrations/roles.sql) rates and closes without UPDATE rights on the rows.
REVOKE EXECUTE ON FUNCTION uppzy.rate_job(bigint, text, text), uppzy.close_session(text) FROM PUBLIC;

-- Wake the workers: one NOTIFY per INSERT statement, on the jobs' wake-up channel.
CREATE FUNCTION uppzy.deliveries_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'delivery');
  RETURN NULL;
END;
$$;

CREATE TRIGGER chat_feedback_wake_on_insert
  AFTER INSERT ON uppzy.chat_feedback
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.deliveries_wake();
CREATE TRIGGER session_closes_wake_on_insert
  AFTER INSERT ON uppzy.session_closes
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.deliveries_wake();

-- Tell the app: NOTIFY uppzy_chat_jobs when a delivery finishes, with a "kind" field:
--   {"kind":"feedback","id":..,"state":..,"job_id":..,"request_id":..}
--   {"kind":"session_close","id":..,"state":..,"session_id":..}
CREATE FUNCTION uppzy.deliveries_notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_ARGV[0] = 'feedback' THEN
    PERFORM pg_notify('uppzy_chat_jobs', json_build_object('kind', 'feedback', 'id', NEW.id,
      'state', NEW.state, 'job_id', NEW.job_id, 'request_id', NEW.request_id)::text);
  ELSE
    PERFORM pg_notify('uppzy_chat_jobs', json_build_object('kind', 'session_close', 'id', NEW.id,
      'state', NEW.state, 'session_id', NEW.session_id)::text);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER chat_feedback_notify_finished
  AFTER UPDATE OF state ON uppzy.chat_feedback
  FOR EACH ROW
  WHEN (NEW.state IN ('delivered', 'failed') AND OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION uppzy.deliveries_notify_finished('feedback');
CREATE TRIGGER chat_feedback_notify_finished_on_insert
  AFTER INSERT ON uppzy.chat_feedback
  FOR EACH ROW WHEN (NEW.state IN ('delivered', 'failed'))
  EXECUTE FUNCTION uppzy.deliveries_notify_finished('feedback');
CREATE TRIGGER session_closes_notify_finished
  AFTER UPDATE OF state ON uppzy.session_closes
  FOR EACH ROW
  WHEN (NEW.state IN ('delivered', 'failed') AND OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION uppzy.deliveries_notify_finished('session_close');
CREATE TRIGGER session_closes_notify_finished_on_insert
  AFTER INSERT ON uppzy.session_closes
  FOR EACH ROW WHEN (NEW.state IN ('delivered', 'failed'))
  EXECUTE FUNCTION uppzy.deliveries_notify_finished('session_close');

-- The jobs' finish notification gains "kind":"chat_job" so one LISTEN serves all three kinds; the keys
-- it had (id, job_key, state) are unchanged.
CREATE OR REPLACE FUNCTION uppzy.chat_jobs_notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs',
    json_build_object('kind', 'chat_job', 'id', NEW.id, 'job_key', NEW.job_key, 'state', NEW.state)::text);
  RETURN NULL;
END;
$$;

-- Operators: both kinds of delivery in one relation.
CREATE VIEW uppzy.deliveries AS
SELECT 'feedback'::text AS kind, id, state, job_id, session_id, request_id, feedback, attempts, max_attempts,
       run_at, error_kind, last_error, last_http_status, errors, locked_by, lease_expires_at,
       delivered_http_status, delivered_at, finished_at, created_at, updated_at
FROM uppzy.chat_feedback
UNION ALL
SELECT 'session_close'::text, id, state, NULL::bigint, session_id, NULL::text, NULL::text, attempts, max_attempts,
       run_at, error_kind, last_error, last_http_status, errors, locked_by, lease_expires_at,
       delivered_http_status, delivered_at, finished_at, created_at, updated_at
FROM uppzy.session_closes;

-- Failed deliveries of both kinds, latest first: why, after how many attempts, and the history.
CREATE VIEW uppzy.delivery_failures AS
SELECT kind, id, job_id, session_id, request_id, error_kind, last_http_status, last_error, attempts,
       max_attempts, errors, created_at, finished_at
FROM uppzy.deliveries
WHERE state = 'failed'
ORDER BY finished_at DESC, kind, id;

-- Feedback figures per window. delivered and failed count ratings that reached that state within the
-- window; good, bad and good_ratio (good / (good + bad), null without ratings) count the ratings made
-- within the window, by their current value; pending counts ratings not yet delivered (any age).
CREATE VIEW uppzy.chat_feedback_health AS
SELECT w.period, d.delivered, d.failed, r.good, r.bad,
       round(r.good::numeric / nullif(r.good + r.bad, 0), 3) AS good_ratio,
       p.pending
FROM (VALUES ('1 hour', interval '1 hour'), ('24 hours', interval '24 hours')) AS w(period, span)
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE state = 'delivered') AS delivered,
         count(*) FILTER (WHERE state = 'failed') AS failed
  FROM uppzy.chat_feedback WHERE finished_at > now() - w.span) d
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE feedback = 'good') AS good,
         count(*) FILTER (WHERE feedback = 'bad') AS bad
  FROM uppzy.chat_feedback WHERE created_at > now() - w.span) r
CROSS JOIN LATERAL (
  SELECT count(*) AS pending FROM uppzy.chat_feedback WHERE state IN ('queued', 'retrying', 'sending')) p
ORDER BY w.span;
