-- 0004: live workers, for operators and the dashboard. Each worker upserts its row when it starts and
-- with every lease renewal (every third of UPPZY_LEASE_MS); a row whose heartbeat is older than the
-- lease belongs to a worker that is gone. Also the index the workers use to notice cancellations of
-- rows they hold.

CREATE TABLE uppzy.workers (
  id             text PRIMARY KEY,
  host           text NOT NULL,
  pid            int NOT NULL,
  version        text NOT NULL,
  site_id        text,
  started_at     timestamptz NOT NULL DEFAULT now(),
  heartbeat_at   timestamptz NOT NULL DEFAULT now(),
  lease_ms       int NOT NULL,
  jobs_in_flight int NOT NULL DEFAULT 0,
  breaker_state  text NOT NULL DEFAULT 'closed',
  stopped_at     timestamptz,
  CONSTRAINT workers_breaker_state_valid CHECK (breaker_state IN ('closed', 'open', 'half_open'))
);

COMMENT ON TABLE uppzy.workers IS
  'One row per worker process; heartbeat_at older than lease_ms means the worker is gone.';
