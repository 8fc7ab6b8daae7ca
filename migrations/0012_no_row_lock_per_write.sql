-- 0012: a worker's write no longer locks the row first (issue 13, the database's cost per job).
--
-- A table with any BEFORE UPDATE ... FOR EACH ROW trigger pays for it on every UPDATE, whatever the
-- trigger's column list and WHEN say: PostgreSQL locks each row (FOR NO KEY UPDATE) and writes that
-- lock to the WAL before it looks at the WHEN. chat_jobs had two such triggers (the cancel request
-- and the metadata size), so the accepted and the completed write each cost a row lock and a WAL
-- record per job, although neither trigger ever fires on a worker's write. pg_waldump of a run of
-- 20,000 jobs: 2 of the 5 Heap/LOCK records per job were these.
--
-- Both keep their BEFORE INSERT form (an INSERT locks nothing) and do their UPDATE work in an AFTER
-- trigger, which costs nothing when its WHEN is false:
--   chat_jobs_metadata_size_on_update raises the same check_violation as before; the statement fails
--       and nothing of it stays.
--   chat_jobs_apply_cancel_request_on_update finishes a waiting row that has a cancel request (the
--       app's UPDATE, uppzy.cancel_jobs(), a worker handing a row back) with a second UPDATE in the same
--       statement, and leaves a finished row as it was. What others see is unchanged: the row is
--       cancelled when the statement ends, and chat_jobs_notify_finished tells the app. Only the
--       RETURNING list of the UPDATE that asked shows the row before the cancellation.
--       A write of a row nobody asked to cancel finds the WHEN false, and queues nothing.
--
-- fillfactor 80 -> 50: a claim, the accepted write and the completed write each add a row version,
-- and a version that does not fit on its page is written to another (a second block in the WAL record
-- and a row lock). Half a page kept free lets most of them stay on the page. Applies to pages filled
-- from now on; existing pages keep their fill until they are rewritten.

ALTER TABLE uppzy.chat_jobs SET (fillfactor = 50);

DROP TRIGGER chat_jobs_metadata_size ON uppzy.chat_jobs;
CREATE TRIGGER chat_jobs_metadata_size
  BEFORE INSERT ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (octet_length(NEW.metadata::text) > 65536)
  EXECUTE FUNCTION uppzy.chat_jobs_metadata_size();
CREATE TRIGGER chat_jobs_metadata_size_on_update
  AFTER UPDATE OF metadata ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (octet_length(NEW.metadata::text) > 65536)
  EXECUTE FUNCTION uppzy.chat_jobs_metadata_size();

-- The UPDATE half of chat_jobs_apply_cancel_request (0002), after the row is written. SECURITY DEFINER:
-- the app's role may UPDATE only cancel_requested_at (roles.sql), and the cancellation it asks for
-- writes the other columns, as the BEFORE trigger did through NEW.
CREATE FUNCTION uppzy.chat_jobs_apply_cancel_request_after() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.state IN ('queued', 'retrying') THEN
    UPDATE uppzy.chat_jobs j
    SET state = 'cancelled',
        finished_at = now(),
        error_kind = 'cancelled',
        last_error = 'cancelled on request while waiting for a submission',
        last_http_status = NULL,
        locked_by = NULL,
        lease_expires_at = NULL,
        updated_at = now(),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
          'attempt', j.attempts,
          'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
          'kind', 'cancelled',
          'http_status', NULL,
          'message', 'cancelled on request while waiting for a submission',
          'request_id', NULL))
    WHERE j.id = NEW.id AND j.state IN ('queued', 'retrying');
  ELSIF NEW.state IN ('submitting', 'polling') THEN
    IF OLD.cancel_requested_at IS NULL THEN
      PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'cancel');
    END IF;
  ELSIF OLD.state = NEW.state AND OLD.cancel_requested_at IS NULL THEN
    -- Already finished: nothing to cancel; leave the row as it was.
    UPDATE uppzy.chat_jobs SET cancel_requested_at = NULL WHERE id = NEW.id;
  END IF;
  RETURN NULL;
END;
$$;

DROP TRIGGER chat_jobs_apply_cancel_request ON uppzy.chat_jobs;
CREATE TRIGGER chat_jobs_apply_cancel_request
  BEFORE INSERT ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.cancel_requested_at IS NOT NULL)
  EXECUTE FUNCTION uppzy.chat_jobs_apply_cancel_request();
CREATE TRIGGER chat_jobs_apply_cancel_request_on_update
  AFTER UPDATE OF state, cancel_requested_at ON uppzy.chat_jobs
  FOR EACH ROW
  WHEN (NEW.cancel_requested_at IS NOT NULL)
  EXECUTE FUNCTION uppzy.chat_jobs_apply_cancel_request_after();
