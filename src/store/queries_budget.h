// The shared request budget's statements (migrations/0010_site_budgets.sql explains the bucket).
#pragma once

namespace uppzy::store::sql {

// The grant: $1 text[] sites, $2 int[] calls each wants, $3 int[] new submissions (in-flight slots)
// each wants, $4 the worker's default site (its NULL-site rows count in its in-flight total). One row
// per site of $1: site_id, budgeted (false: no limit of any kind, send freely), tokens granted (at most
// ~100 ms of the rate, never more than the bucket holds; the calls already waiting first, and none for
// new submissions while any worker's waiting calls went short in the last 200 ms), slots granted
// (-1: no max_in_flight),
// the effective rate, blocked_until in epoch ms (0: none). Budget rows are locked in site order, so
// concurrent grants never deadlock; a site's first grant creates its row (a race for it grants 0 once).
inline constexpr const char* kBudgetsGrant = R"sql(
WITH w AS (
  -- An operator's pause (paused_at) claims nothing new: no tokens for its submissions.
  SELECT w.site_id,
         CASE WHEN s.paused_at IS NULL THEN greatest(w.calls, 0)
              ELSE greatest(w.calls - greatest(w.slots, 0), 0) END AS calls,
         CASE WHEN s.paused_at IS NULL THEN greatest(w.slots, 0) ELSE 0 END AS slots,
         s.requests_per_s::float8 AS configured, s.burst, s.max_in_flight,
         -- A site's held rows: read only for a grant that asks for slots (calls alone never need them,
         -- and with no index on the site of held rows the count reads every held row of the fleet).
         CASE WHEN s.max_in_flight IS NULL THEN NULL
              WHEN s.paused_at IS NOT NULL OR w.slots <= 0 THEN 0 ELSE (
           SELECT count(*) FROM uppzy.chat_jobs j
           WHERE j.phase = 'held'
             AND (j.site_id = w.site_id OR (j.site_id IS NULL AND w.site_id = $4))) END AS in_flight
  FROM unnest($1::text[], $2::int[], $3::int[]) AS w(site_id, calls, slots)
  LEFT JOIN uppzy.sites s ON s.site_id = w.site_id
), cur AS (
  SELECT b.site_id, b.tokens, b.refilled_at, b.rate_factor, b.learned_rate, b.blocked_until, b.last_429_at,
         b.reserved, b.reserved_until, b.polls_short_until, w.calls, w.slots, w.configured, w.burst, w.max_in_flight, w.in_flight
  FROM uppzy.site_budgets b JOIN w ON w.site_id = b.site_id
  WHERE w.configured IS NOT NULL OR b.learned_rate IS NOT NULL OR w.max_in_flight IS NOT NULL
  ORDER BY b.site_id
  FOR UPDATE OF b
), r AS (
  SELECT cur.*,
         coalesce(cur.configured, cur.learned_rate) * cur.rate_factor AS rate,
         greatest(0, extract(epoch FROM now() - cur.refilled_at))::float8 AS elapsed,
         coalesce(cur.burst, greatest(1, ceil(coalesce(cur.configured, cur.learned_rate))))::float8 AS cap,
         CASE WHEN cur.reserved_until > now() THEN cur.reserved ELSE 0 END AS reserved_now
  FROM cur
), a0 AS (
  SELECT r.*,
         least(r.cap, r.tokens + coalesce(r.rate, 0) * r.elapsed) AS avail,
         greatest(1, ceil(r.rate * 0.1))::int AS chunk,       -- ~100 ms of the rate (NULL: no rate)
         greatest(r.calls - r.slots, 0) AS poll_calls          -- calls already waiting: polls first
  FROM r
), a1 AS (
  SELECT a0.*,
         CASE WHEN a0.rate IS NULL THEN a0.poll_calls
              ELSE least(a0.poll_calls, a0.chunk, floor(a0.avail)::int) END AS poll_tokens
  FROM a0
), a AS (
  -- Polls before new submissions, across workers: while any worker's waiting calls go short of the
  -- bucket (polls_short_until, 200 ms), no worker gets tokens for new submissions.
  SELECT a1.*,
         (a1.rate IS NOT NULL AND a1.poll_tokens < least(a1.poll_calls, a1.chunk)) AS polls_short,
         CASE WHEN a1.rate IS NULL THEN a1.calls
              WHEN a1.poll_tokens < least(a1.poll_calls, a1.chunk) OR a1.polls_short_until > now()
                THEN a1.poll_tokens
              ELSE a1.poll_tokens + greatest(0, least(a1.slots, a1.chunk - a1.poll_tokens,
                                                      floor(a1.avail)::int - a1.poll_tokens)) END
           AS tokens_granted,
         CASE WHEN a1.max_in_flight IS NULL THEN -1
              ELSE greatest(0, least(a1.slots, a1.max_in_flight - a1.in_flight - a1.reserved_now))::int END
           AS slots_granted
  FROM a1
), upd AS (
  UPDATE uppzy.site_budgets b
  SET tokens = CASE WHEN a.rate IS NULL THEN 0 ELSE greatest(0, a.avail - a.tokens_granted) END,
      refilled_at = greatest(now(), a.refilled_at),
      rate_factor = CASE WHEN a.blocked_until IS NULL OR a.blocked_until <= now()
                         THEN least(1, a.rate_factor + 0.05 * a.elapsed) ELSE a.rate_factor END,
      learned_rate = CASE WHEN a.configured IS NULL AND a.rate_factor + 0.05 * a.elapsed >= 1
                               AND a.last_429_at < now() - interval '1 minute' THEN NULL
                          ELSE a.learned_rate END,
      granted = b.granted + a.tokens_granted,
      polls_short_until = CASE WHEN a.polls_short THEN now() + interval '200 milliseconds'
                               ELSE b.polls_short_until END,
      last_grant_at = CASE WHEN a.tokens_granted > 0 THEN now() ELSE b.last_grant_at END,
      reserved = CASE WHEN a.slots_granted > 0 THEN a.reserved_now + a.slots_granted ELSE b.reserved END,
      reserved_until = CASE WHEN a.slots_granted > 0 THEN now() + interval '1 second' ELSE b.reserved_until END
  FROM a WHERE b.site_id = a.site_id
  RETURNING b.site_id, a.tokens_granted, a.slots_granted, a.rate, a.blocked_until
), ins AS (
  INSERT INTO uppzy.site_budgets AS b (site_id, tokens, refilled_at, granted, last_grant_at, reserved,
                                       reserved_until)
  SELECT n.site_id, greatest(0, coalesce(n.cap, 0) - n.tokens_granted), now(), n.tokens_granted, now(),
         n.slots_pos, CASE WHEN n.slots_granted >= 0 THEN now() + interval '1 second' END
  FROM (
    SELECT w.site_id, w.configured,
           coalesce(w.burst, greatest(1, ceil(w.configured)))::float8 AS cap,
           CASE WHEN w.configured IS NULL THEN w.calls
                ELSE least(w.calls, greatest(1, ceil(w.configured * 0.1))::int,
                           coalesce(w.burst, greatest(1, ceil(w.configured))::int)) END AS tokens_granted,
           CASE WHEN w.max_in_flight IS NULL THEN -1
                ELSE greatest(0, least(w.slots, w.max_in_flight - w.in_flight))::int END AS slots_granted,
           CASE WHEN w.max_in_flight IS NULL THEN 0
                ELSE greatest(0, least(w.slots, w.max_in_flight - w.in_flight))::int END AS slots_pos
    FROM w
    WHERE (w.configured IS NOT NULL OR w.max_in_flight IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM uppzy.site_budgets x WHERE x.site_id = w.site_id)
  ) n
  ON CONFLICT (site_id) DO NOTHING
  RETURNING b.site_id, b.granted::int AS tokens_granted,
            CASE WHEN b.reserved_until IS NULL THEN -1 ELSE b.reserved END AS slots_granted,
            NULL::float8 AS rate, NULL::timestamptz AS blocked_until
)
SELECT w.site_id,
       (g.site_id IS NOT NULL OR w.configured IS NOT NULL OR w.max_in_flight IS NOT NULL) AS budgeted,
       coalesce(g.tokens_granted, 0),
       coalesce(g.slots_granted, CASE WHEN w.max_in_flight IS NULL THEN -1 ELSE 0 END),
       coalesce(g.rate, w.configured, 0),
       coalesce((extract(epoch FROM g.blocked_until) * 1000)::bigint, 0)
FROM w LEFT JOIN (SELECT * FROM upd UNION ALL SELECT * FROM ins) g ON g.site_id = w.site_id
)sql";

// A 429 for a site: $1 site, $2 block ms (Retry-After or back-off), $3 this worker's request rate to
// the site (requests/s), from which a site with no configured limit learns one (x the live workers
// serving it). Empties the bucket until the block ends and cuts rate_factor by 30% once per second at
// most.
inline constexpr const char* kBudgetsBlock = R"sql(
INSERT INTO uppzy.site_budgets AS b (site_id, tokens, refilled_at, rate_factor, learned_rate, blocked_until,
                                     last_429_at, rate_limited)
SELECT $1, 0, now() + $2::bigint * interval '1 millisecond', 0.7,
       CASE WHEN c.requests_per_s IS NULL THEN greatest($3::float8 * c.workers, 0.1) END,
       now() + $2::bigint * interval '1 millisecond', now(), 1
FROM (SELECT (SELECT s.requests_per_s FROM uppzy.sites s WHERE s.site_id = $1) AS requests_per_s,
             greatest(1, (SELECT count(*) FROM uppzy.live_worker_sites l WHERE l.site_id = $1)) AS workers) c
ON CONFLICT (site_id) DO UPDATE SET
  tokens = 0,
  refilled_at = greatest(b.refilled_at, EXCLUDED.refilled_at),
  blocked_until = greatest(b.blocked_until, EXCLUDED.blocked_until),
  rate_factor = CASE WHEN b.last_429_at IS NULL OR b.last_429_at < now() - interval '1 second'
                     THEN greatest(0.02, b.rate_factor * 0.7) ELSE b.rate_factor END,
  learned_rate = CASE WHEN EXCLUDED.learned_rate IS NULL THEN NULL
                      ELSE coalesce(b.learned_rate, EXCLUDED.learned_rate) END,
  last_429_at = now(),
  rate_limited = b.rate_limited + 1
)sql";

}  // namespace uppzy::store::sql
