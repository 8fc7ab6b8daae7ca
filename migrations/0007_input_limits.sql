-- 0007: input limits. What an app may INSERT is bounded, so that hostile or buggy input cannot make a
-- job that never runs, a blank question, or a row too large for the dashboard to show:
--
--   chat_jobs_metadata_size              metadata at most 65,536 bytes (64 KiB) as text, at INSERT and
--                                        at any UPDATE that sets metadata (a trigger; see below)
--   chat_jobs_message_not_blank          redefined: a message of only spaces, tabs, newlines, NBSP,
--                                        zero-width or other invisible characters is blank
--   chat_jobs_session_id_not_blank       the same rule for session_id
--   chat_feedback_session_id_not_blank   ... for the session_id of a rating
--   session_closes_session_id_not_blank  ... for the session_id of a close
--   chat_jobs_run_at_finite              run_at is a real time, not 'infinity' or '-infinity'
--   chat_jobs_cancel_requested_at_finite the same for cancel_requested_at (the app's cancel request)
--
-- Applying this to a database that already holds rows breaking these rules never fails:
--   - The CHECK constraints are added NOT VALID (they hold for every new INSERT and UPDATE at once),
--     then validated at the end of this file when no existing row breaks them. When one does, the
--     constraint stays NOT VALID and a NOTICE says which; `SELECT conname FROM pg_constraint WHERE NOT
--     convalidated` lists them, and `ALTER TABLE ... VALIDATE CONSTRAINT ...` can be run later.
--   - A NOT VALID CHECK still refuses any UPDATE of a row that breaks it, even one that changes another
--     column. A waiting or in-flight row that breaks a rule would therefore wedge the workers (their
--     claim and their writes are batched: one refused row fails the batch). So such rows, which could
--     not have been answered properly anyway, are finished first as `failed` with error_kind
--     `bad_request` and an `errors` entry naming this migration. Finished rows are left as they are
--     (except a non-finite run_at or cancel_requested_at, which says nothing about a finished row and
--     is set to the row's finished_at); an operator retry of a finished row with a blank message or
--     session_id is refused by the constraint, which is right: Uppzy would refuse it too.
--   - metadata has no such rule for old rows: it is a trigger, not a CHECK, because old rows may hold
--     metadata larger than 64 KiB legitimately, and a CHECK (even NOT VALID) would refuse the worker's
--     state changes of those rows. The trigger fires on INSERT and on UPDATE OF metadata only (the
--     worker and the operator functions never set metadata), and raises a check_violation whose
--     constraint name is chat_jobs_metadata_size, as a CHECK constraint would. The dashboard reads at
--     most a bounded part of any metadata (see src/store/queries_dashboard.h).
--
-- Locking: ALTER TABLE takes an ACCESS EXCLUSIVE lock on the three tables until this file commits, and
-- each validation reads the whole table once (seconds on millions of rows).

-- ---------------------------------------------------------------------------------------------------
-- Blank text: nothing but white space and invisible characters. One definition for every not-blank
-- constraint. Blank are:
--   U+0001-U+001F, U+007F-U+009F  C0 and C1 controls (tab, newline, carriage return, ...)
--   U+0020, U+00A0                space, no-break space
--   U+00AD, U+034F, U+061C        soft hyphen, combining grapheme joiner, Arabic letter mark
--   U+115F, U+1160, U+3164, U+FFA0 Hangul fillers (render as nothing)
--   U+1680, U+180E                Ogham space mark, Mongolian vowel separator
--   U+2000-U+200F                 en/em/thin/hair... spaces, zero-width space, ZWNJ, ZWJ, LRM, RLM
--   U+2028-U+202F                 line and paragraph separators, bidi embeddings, narrow no-break space
--   U+205F-U+206F                 medium mathematical space, word joiner, invisible operators, isolates
--   U+2800                        braille pattern blank
--   U+3000                        ideographic space
--   U+FE00-U+FE0F                 variation selectors (alone; an emoji that carries one is not blank)
--   U+FEFF                        zero-width no-break space (byte order mark)
--   U+FFF9-U+FFFB                 interlinear annotation controls
--   U+1D173-U+1D17A               musical symbol format characters
--   U+E0000-U+E007F               tag characters
-- An empty string is blank; NULL is NULL (so a CHECK on a nullable column lets NULL through). The
-- database must be UTF8 (the \u escapes of the regular expression name Unicode code points).
CREATE FUNCTION uppzy.is_blank(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT value ~ ('^[\u0001-\u0020\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u180e'
                  '\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff'
                  '\uffa0\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e007f]*$')
$$;

COMMENT ON FUNCTION uppzy.is_blank(text) IS
  'True when the text holds only white space, controls and invisible (format) characters.';

-- ---------------------------------------------------------------------------------------------------
-- Rows already here that break a rule and are not finished: finish them as failed (see the top).

UPDATE uppzy.chat_jobs AS j
SET state = 'failed',
    finished_at = now(),
    error_kind = 'bad_request',
    last_error = 'refused by migration 0007_input_limits: ' || concat_ws(', ',
      CASE WHEN uppzy.is_blank(j.message) THEN 'the message is blank' END,
      CASE WHEN uppzy.is_blank(j.session_id) THEN 'the session_id is blank' END,
      CASE WHEN NOT isfinite(j.run_at) THEN 'run_at is not a finite time' END,
      CASE WHEN NOT isfinite(j.cancel_requested_at) THEN 'cancel_requested_at is not a finite time' END),
    last_http_status = NULL,
    run_at = CASE WHEN NOT isfinite(j.run_at) THEN now() ELSE j.run_at END,
    cancel_requested_at =
      CASE WHEN NOT isfinite(j.cancel_requested_at) THEN now() ELSE j.cancel_requested_at END,
    locked_by = NULL,
    lease_expires_at = NULL,
    updated_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object(
      'attempt', j.attempts,
      'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'kind', 'bad_request',
      'http_status', NULL,
      'message', 'refused by migration 0007_input_limits: the row breaks an input rule added there',
      'request_id', j.request_id))
WHERE j.state IN ('queued', 'submitting', 'polling', 'retrying')
  AND (uppzy.is_blank(j.message) OR uppzy.is_blank(j.session_id) OR NOT isfinite(j.run_at)
       OR NOT isfinite(j.cancel_requested_at));

-- Finished rows: a non-finite run_at or cancel_requested_at means nothing once a row has finished.
UPDATE uppzy.chat_jobs AS j
SET run_at = CASE WHEN NOT isfinite(j.run_at) THEN j.finished_at ELSE j.run_at END,
    cancel_requested_at =
      CASE WHEN NOT isfinite(j.cancel_requested_at) THEN j.finished_at ELSE j.cancel_requested_at END
WHERE j.state IN ('completed', 'failed', 'cancelled')
  AND (NOT isfinite(j.run_at) OR NOT isfinite(j.cancel_requested_at));

UPDATE uppzy.chat_feedback AS f
SET state = 'failed',
    finished_at = now(),
    error_kind = 'bad_request',
    last_error = 'refused by migration 0007_input_limits: the session_id is blank',
    last_http_status = NULL,
    locked_by = NULL,
    lease_expires_at = NULL,
    updated_at = now(),
    errors = f.errors || jsonb_build_array(jsonb_build_object(
      'attempt', f.attempts,
      'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'kind', 'bad_request',
      'http_status', NULL,
      'message', 'refused by migration 0007_input_limits: the session_id is blank',
      'request_id', f.request_id))
WHERE f.state IN ('queued', 'sending', 'retrying') AND uppzy.is_blank(f.session_id);

UPDATE uppzy.session_closes AS c
SET state = 'failed',
    finished_at = now(),
    error_kind = 'bad_request',
    last_error = 'refused by migration 0007_input_limits: the session_id is blank',
    last_http_status = NULL,
    locked_by = NULL,
    lease_expires_at = NULL,
    updated_at = now(),
    errors = c.errors || jsonb_build_array(jsonb_build_object(
      'attempt', c.attempts,
      'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'kind', 'bad_request',
      'http_status', NULL,
      'message', 'refused by migration 0007_input_limits: the session_id is blank',
      'request_id', NULL))
WHERE c.state IN ('queued', 'sending', 'retrying') AND uppzy.is_blank(c.session_id);

-- ---------------------------------------------------------------------------------------------------
-- The constraints. chat_jobs_message_not_blank keeps its name (names are a contract); only its rule
-- changes, from btrim (spaces only) to uppzy.is_blank.

ALTER TABLE uppzy.chat_jobs
  DROP CONSTRAINT chat_jobs_message_not_blank,
  ADD CONSTRAINT chat_jobs_message_not_blank CHECK (NOT uppzy.is_blank(message)) NOT VALID,
  ADD CONSTRAINT chat_jobs_session_id_not_blank CHECK (NOT uppzy.is_blank(session_id)) NOT VALID,
  -- 'infinity' would never be claimed (run_at <= now() never holds) and '-infinity' sorts before
  -- every honest job in the claim order.
  ADD CONSTRAINT chat_jobs_run_at_finite CHECK (isfinite(run_at)) NOT VALID,
  ADD CONSTRAINT chat_jobs_cancel_requested_at_finite CHECK (isfinite(cancel_requested_at)) NOT VALID;

ALTER TABLE uppzy.chat_feedback
  ADD CONSTRAINT chat_feedback_session_id_not_blank CHECK (NOT uppzy.is_blank(session_id)) NOT VALID;

ALTER TABLE uppzy.session_closes
  ADD CONSTRAINT session_closes_session_id_not_blank CHECK (NOT uppzy.is_blank(session_id)) NOT VALID;

-- metadata: at most 64 KiB as text. Enough for any ids and tags an app keeps beside a job, small
-- enough that reading one row stays cheap. A trigger rather than a CHECK: see the top of this file.
CREATE FUNCTION uppzy.chat_jobs_metadata_size() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'new row for relation "chat_jobs" violates check constraint "chat_jobs_metadata_size"'
    USING ERRCODE = 'check_violation', CONSTRAINT = 'chat_jobs_metadata_size', SCHEMA = 'uppzy',
          TABLE = 'chat_jobs',
          DETAIL = format('metadata is %s bytes as text; at most 65536 (64 KiB) are accepted.',
                          octet_length(NEW.metadata::text));
END;
$$;

CREATE TRIGGER chat_jobs_metadata_size
  BEFORE INSERT OR UPDATE OF metadata ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (octet_length(NEW.metadata::text) > 65536)
  EXECUTE FUNCTION uppzy.chat_jobs_metadata_size();

-- ---------------------------------------------------------------------------------------------------
-- Validate each new constraint when every existing row meets it; otherwise leave it NOT VALID (it still
-- holds for every new write) and say so.
DO $$
DECLARE
  c record;
BEGIN
  FOR c IN SELECT * FROM (VALUES
      ('uppzy.chat_jobs', 'chat_jobs_message_not_blank'),
      ('uppzy.chat_jobs', 'chat_jobs_session_id_not_blank'),
      ('uppzy.chat_jobs', 'chat_jobs_run_at_finite'),
      ('uppzy.chat_jobs', 'chat_jobs_cancel_requested_at_finite'),
      ('uppzy.chat_feedback', 'chat_feedback_session_id_not_blank'),
      ('uppzy.session_closes', 'session_closes_session_id_not_blank')) AS v(tbl, name)
  LOOP
    BEGIN
      EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', c.tbl, c.name);
    EXCEPTION WHEN check_violation THEN
      RAISE NOTICE '0007_input_limits: % keeps rows that break %; the constraint is NOT VALID (it holds '
        'for new writes). Fix or purge those rows, then ALTER TABLE % VALIDATE CONSTRAINT %.',
        c.tbl, c.name, c.tbl, c.name;
    END;
  END LOOP;
END;
$$;
