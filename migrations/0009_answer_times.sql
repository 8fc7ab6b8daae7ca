-- 0009: answer times, for adaptive polling (include/uppzy/poll_schedule.h).
--
-- We never see the moment Uppzy's answer became ready, only that it was not ready at one poll and was
-- at the next. So each submission that the worker polled to its end keeps both ends, counted in
-- milliseconds from submitted_at (the acceptance):
--
--   answer_ready_after_ms  the answer was not ready yet this long after submitted_at: the last poll
--                          that saw the request in progress (0 if none did)
--   answer_seen_after_ms   the poll that saw the answer (completed); NULL when the polls ran out
--                          (a poll timeout: the answer came later, if ever)
--
-- Workers read the recent ones back, by site, to fit each site's answer-time estimate (a query over
-- the last minutes of finished rows through chat_jobs_finished_at_idx; no new index, no second write).
-- A new submission of the same job (a retry) clears both. Only the worker writes them; the CHECK keeps
-- a broken writer from storing an interval the estimate would misread.

ALTER TABLE uppzy.chat_jobs
  ADD COLUMN answer_ready_after_ms integer,
  ADD COLUMN answer_seen_after_ms integer,
  ADD CONSTRAINT chat_jobs_answer_times_valid CHECK (
    (answer_ready_after_ms IS NULL AND answer_seen_after_ms IS NULL)
    OR (answer_ready_after_ms IS NOT NULL AND answer_ready_after_ms >= 0
        AND (answer_seen_after_ms IS NULL OR answer_seen_after_ms > answer_ready_after_ms)));

COMMENT ON COLUMN uppzy.chat_jobs.answer_ready_after_ms IS
  'ms after submitted_at when a poll last saw the request in progress (0 if none): the answer came later';
COMMENT ON COLUMN uppzy.chat_jobs.answer_seen_after_ms IS
  'ms after submitted_at when a poll saw the answer; NULL after a poll timeout';

-- Per-site polling: a site may poll in its own mode with its own accepted delay, beside the
-- poll_interval_ms and poll_timeout_ms of 0008. NULL: the worker's UPPZY_POLL_MODE and
-- UPPZY_POLL_TARGET_DELAY_MS.
ALTER TABLE uppzy.sites
  ADD COLUMN poll_mode text,
  ADD COLUMN poll_target_delay_ms integer,
  ADD CONSTRAINT sites_poll_mode_valid CHECK (poll_mode IN ('fixed', 'adaptive')),
  ADD CONSTRAINT sites_poll_target_delay_range CHECK (poll_target_delay_ms BETWEEN 100 AND 600000);

-- Per site, the jobs finished in the last hour: how many status calls an answer took, and how long an
-- answer may have waited for the poll that found it (answer_seen_after_ms - answer_ready_after_ms is
-- the most it waited; its true ready-to-stored delay lies between 0 and that). The default site's rows
-- (site_id NULL) are the row with site_id NULL. `stats` and operators read it.
CREATE VIEW uppzy.site_polling_health AS
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
WHERE finished_at > now() - interval '1 hour'
GROUP BY site_id;
