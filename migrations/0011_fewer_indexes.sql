-- 0011: fewer index entries per job (issue 13, the database's cost per job).
--
-- Every update of a job row that is not HOT adds an entry to each index whose predicate the new row
-- matches; a job's claim, accepted and completed writes took 14 such entries (WAL and CPU on every
-- one). Two indexes duplicated others:
--
--   chat_jobs_held_lease_idx (lease_expires_at) WHERE submitting/polling
--       took an entry at the claim and at the accepted write, and made every lease renewal a non-HOT
--       update. Rescue and adoption read held rows whose lease ran out; they now find the held rows
--       through chat_jobs_active_state_idx (state, created_at), which holds the same rows, and check
--       the lease on each (held rows are at most the fleet's UPPZY_MAX_IN_FLIGHT, and the passes run
--       every few seconds). A renewal now changes no indexed column, so it can be a HOT update.
--   chat_jobs_finished_idx (state, finished_at) and chat_jobs_finished_at_idx (finished_at)
--       both took an entry at every finish, over the same rows. One index on (finished_at, state)
--       serves both: time windows (health, the per-minute chart, answer times) read a range of
--       finished_at; per-state counts and minimum ages read it index-only; purge and the failure
--       listing read it in finished_at order and skip other states inside the index.
--
-- On a large table CREATE INDEX blocks writes while it builds (about a second per million rows on
-- the benchmark machine); a DBA can run the same statements by hand first with CREATE INDEX
-- CONCURRENTLY and DROP INDEX CONCURRENTLY, then this migration only records itself.

DROP INDEX IF EXISTS uppzy.chat_jobs_held_lease_idx;
DROP INDEX IF EXISTS uppzy.chat_jobs_finished_at_idx;

-- Built under a new name first, so the table never lacks an index on finished rows.
CREATE INDEX IF NOT EXISTS chat_jobs_finished_time_idx ON uppzy.chat_jobs (finished_at, state)
  WHERE state IN ('completed', 'failed', 'cancelled');
DROP INDEX IF EXISTS uppzy.chat_jobs_finished_idx;

-- The last hour's finished rows, by site: the same view as 0009's, with the finished states spelled
-- out so the partial index above serves it (finished_at is set only on finished rows, so the rows are
-- the same).
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
WHERE finished_at > now() - interval '1 hour' AND state IN ('completed', 'failed', 'cancelled')
GROUP BY site_id;
