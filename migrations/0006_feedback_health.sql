-- 0006: feedback figures in uppzy.chat_job_health, so psql, `uppzy-worker stats` and the dashboard show
-- ratings delivered, failed and the good/bad ratio beside the jobs' figures for each window. The jobs'
-- columns are unchanged (0002); the feedback columns come from uppzy.chat_feedback_health (0003).

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
       fb.good_ratio AS feedback_good_ratio
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
ORDER BY w.ord;
