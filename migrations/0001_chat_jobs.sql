-- 0001: the jobs table, its state machine constraints, the claim index, wake-up and finish
-- notifications, and configuration incidents.
--
-- A web app enqueues with a plain INSERT (see README). Only session_id and message are required.

CREATE SCHEMA IF NOT EXISTS uppzy;

CREATE TABLE uppzy.chat_jobs (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_key           text UNIQUE,
  session_id        text NOT NULL,
  message           text NOT NULL,
  response_language text NOT NULL DEFAULT 'en',
  metadata          jsonb NOT NULL DEFAULT '{}',
  state             text NOT NULL DEFAULT 'queued',
  priority          smallint NOT NULL DEFAULT 0,
  run_at            timestamptz NOT NULL DEFAULT now(),
  attempts          int NOT NULL DEFAULT 0,
  max_attempts      int NOT NULL DEFAULT 3,
  request_id        text,
  submitted_at      timestamptz,
  poll_deadline     timestamptz,
  polls             int NOT NULL DEFAULT 0,
  answer            text,
  result            jsonb,
  error_kind        text,
  last_error        text,
  last_http_status  int,
  errors            jsonb NOT NULL DEFAULT '[]',
  locked_by         text,
  lease_expires_at  timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz,

  CONSTRAINT chat_jobs_state_valid
    CHECK (state IN ('queued', 'submitting', 'polling', 'retrying', 'completed', 'failed', 'cancelled')),
  CONSTRAINT chat_jobs_finished_at_iff_terminal
    CHECK ((state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
  CONSTRAINT chat_jobs_attempts_range CHECK (attempts >= 0 AND attempts <= max_attempts),
  CONSTRAINT chat_jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
  -- A job waiting for a submission must have one left; otherwise it could never run.
  CONSTRAINT chat_jobs_waiting_has_attempt_left
    CHECK (state NOT IN ('queued', 'retrying') OR attempts < max_attempts),
  -- Uppzy does not document a maximum message length; we accept up to 8000 characters.
  CONSTRAINT chat_jobs_message_length CHECK (length(message) BETWEEN 1 AND 8000),
  CONSTRAINT chat_jobs_message_not_blank CHECK (btrim(message) <> ''),
  CONSTRAINT chat_jobs_session_id_length CHECK (length(session_id) BETWEEN 1 AND 255),
  -- A language tag such as en, de or pt-BR (BCP 47 shape: a 2-3 letter language, optional subtags).
  CONSTRAINT chat_jobs_response_language_tag
    CHECK (response_language ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$'),
  CONSTRAINT chat_jobs_job_key_length CHECK (job_key IS NULL OR length(job_key) BETWEEN 1 AND 255),
  CONSTRAINT chat_jobs_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
  CONSTRAINT chat_jobs_errors_array CHECK (jsonb_typeof(errors) = 'array'),
  CONSTRAINT chat_jobs_polls_nonnegative CHECK (polls >= 0),
  CONSTRAINT chat_jobs_polling_has_request_id CHECK (state <> 'polling' OR request_id IS NOT NULL),
  CONSTRAINT chat_jobs_completed_has_answer CHECK (state <> 'completed' OR answer IS NOT NULL),
  CONSTRAINT chat_jobs_failed_has_error_kind CHECK (state <> 'failed' OR error_kind IS NOT NULL),
  CONSTRAINT chat_jobs_error_kind_valid CHECK (error_kind IS NULL OR error_kind IN (
    'rate_limited', 'server_error', 'network', 'poll_timeout', 'upstream_failed', 'bad_request',
    'unauthorized', 'forbidden', 'invalid_response', 'lease_expired', 'cancelled'))
) WITH (fillfactor = 80);  -- room on each page so state changes stay HOT updates

COMMENT ON TABLE uppzy.chat_jobs IS
  'One row per Uppzy async chat job. Apps INSERT (session_id, message); uppzy-worker does the rest.';

-- The claim query reads only claimable rows, best first; the index holds nothing else.
CREATE INDEX chat_jobs_claimable_idx ON uppzy.chat_jobs (priority DESC, run_at, id)
  WHERE state IN ('queued', 'retrying');

-- Rescue and adoption look for held rows whose lease ran out.
CREATE INDEX chat_jobs_held_lease_idx ON uppzy.chat_jobs (lease_expires_at)
  WHERE state IN ('submitting', 'polling');

-- Wake the workers: one NOTIFY per INSERT statement, however many rows it inserts.
CREATE FUNCTION uppzy.chat_jobs_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs_wakeup', '');
  RETURN NULL;
END;
$$;

CREATE TRIGGER chat_jobs_wake_on_insert
  AFTER INSERT ON uppzy.chat_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.chat_jobs_wake();

-- Tell the app: NOTIFY uppzy_chat_jobs '{"id":..,"job_key":..,"state":..}' when a job finishes.
CREATE FUNCTION uppzy.chat_jobs_notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs',
    json_build_object('id', NEW.id, 'job_key', NEW.job_key, 'state', NEW.state)::text);
  RETURN NULL;
END;
$$;

CREATE TRIGGER chat_jobs_notify_finished
  AFTER UPDATE OF state ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.state IN ('completed', 'failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
  EXECUTE FUNCTION uppzy.chat_jobs_notify_finished();

CREATE TRIGGER chat_jobs_notify_finished_on_insert
  AFTER INSERT ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.state IN ('completed', 'failed', 'cancelled'))
  EXECUTE FUNCTION uppzy.chat_jobs_notify_finished();

-- 401 and 403 are configuration incidents: one open row per API key, never the key itself.
CREATE TABLE uppzy.incidents (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind                text NOT NULL,
  http_status         int,
  detail              text,
  site_id             text,
  api_key_fingerprint text NOT NULL,
  opened_by           text,
  opened_at           timestamptz NOT NULL DEFAULT now(),
  resolved_at         timestamptz,
  CONSTRAINT incidents_kind_valid CHECK (kind IN ('unauthorized', 'forbidden'))
);

-- At most one open incident per key, however many workers hit the 401 at once.
CREATE UNIQUE INDEX incidents_one_open_per_key ON uppzy.incidents (api_key_fingerprint)
  WHERE resolved_at IS NULL;

-- Resolving an incident wakes the workers so they resume within moments.
CREATE FUNCTION uppzy.incidents_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'incident');
  RETURN NULL;
END;
$$;

CREATE TRIGGER incidents_wake_on_resolve
  AFTER UPDATE OF resolved_at ON uppzy.incidents
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.incidents_wake();
