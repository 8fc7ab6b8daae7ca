-- 0014: per-worker reads that grew with the table, made once per deployment or O(what they find),
-- and wake-ups that say what to claim
-- (issue 13: many workers on one database).
--
-- 1. The queue gauges of /metrics (jobs per state and site, the oldest queued job) counted every
--    unfinished row, in every worker, every UPPZY_STATS_INTERVAL_MS: with 100,000 jobs queued and eight
--    workers that was 40% of the database's time (bench S9). Now one worker computes them and stores
--    them here; the others read this one row. The one that computes is whichever holds the session
--    advisory lock uppzy.gauges_lock_key() on its maintenance connection (it passes to another worker
--    when that connection ends). A row older than a few intervals (a leader that hangs, or a pooler
--    that hides which session holds the lock) makes a reader compute and store it itself.
--    Operators may read it: `SELECT computed_at, computed_by, counts FROM uppzy.queue_gauges`.
-- 2. A worker asks every second which of its rows the app asked to cancel. That read went through
--    every held row; the index below holds only rows with a cancel request, so it reads what it finds.
--    It reads no column the accepted write or a lease renewal changes: both stay HOT (0013).

CREATE TABLE uppzy.queue_gauges (
  id          boolean PRIMARY KEY DEFAULT true CHECK (id),
  computed_at timestamptz NOT NULL,
  computed_by text NOT NULL,
  -- [[site_id or null, state, jobs, oldest created_at], ...] for the unfinished states.
  counts      jsonb NOT NULL CHECK (jsonb_typeof(counts) = 'array')
);

COMMENT ON TABLE uppzy.queue_gauges IS
  'One row: the unfinished jobs per site and state, as the gauges leader last counted them (0014).';

-- The key of the session advisory lock whose holder computes uppzy.queue_gauges.
CREATE FUNCTION uppzy.gauges_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 7583922145930061314::bigint $$;

CREATE INDEX chat_jobs_cancel_requested_idx ON uppzy.chat_jobs (locked_by)
  WHERE cancel_requested_at IS NOT NULL AND phase = 'held';

-- 3. A wake-up names what to claim (the worker's Mailbox::WakeForPayload): '' is new chat jobs, so a
--    worker woken by an app's INSERT claims jobs only, not ratings and closes too. uppzy.sites shared
--    the jobs' '' (0008); a site's change may free either kind, so it now says 'sites'.
CREATE FUNCTION uppzy.sites_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('uppzy_chat_jobs_wakeup', 'sites');
  RETURN NULL;
END;
$$;

DROP TRIGGER sites_wake ON uppzy.sites;
CREATE TRIGGER sites_wake
  AFTER INSERT OR UPDATE ON uppzy.sites
  FOR EACH STATEMENT EXECUTE FUNCTION uppzy.sites_wake();
