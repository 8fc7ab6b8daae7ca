-- 0016: rescue and adoption stop reading every held row at every pass (issue 13: the next limit with
-- many workers, docs/scaling.md).
--
-- A worker adopts polling rows whose lease ran out, and rescues submitting ones, every
-- UPPZY_RESCUE_INTERVAL_MS and at every wake-up. There is no index on lease_expires_at (a lease
-- renewal would then be no longer HOT, 0011), so each of those reads visited every held row of the
-- fleet: 19 ms with 100,000 rows held. Since this migration a worker reads every held row only when a
-- lease may have run out unnoticed (a worker missed its heartbeat, or one started: uppzy.workers) and
-- every UPPZY_RESCUE_FULL_INTERVAL_MS. The one case that needs no such signal is a row handed back at a
-- shutdown or an incident (locked_by NULL, lease ended at once); this index finds those at every pass.
--
-- It costs the hot path nothing: no job's claim, accepted write, renewal or finish writes a row that
-- matches it (locked_by is set while a row is held, except after a hand-back), and it reads no column
-- a renewal or the accepted write changes, so both stay HOT.
CREATE INDEX chat_jobs_handed_back_idx ON uppzy.chat_jobs (created_at)
  WHERE phase = 'held' AND locked_by IS NULL;
