-- 0010: a request budget per site that every worker shares (issue 10, section 2).
--
--   uppzy.site_budgets  one token bucket per site, kept here so that every worker draws on the same
--                       one. Only the workers write it, in two named statements of the store
--                       (src/store/queries_budget.h): the grant and the block.
--     grant             a worker with calls to make takes a few tokens (at most ~100 ms of the rate) in
--                       one statement for all its sites. The bucket refills from the database clock
--                       (now()), never a worker's: tokens += rate x (now() - refilled_at), at most
--                       `burst`. Tokens leave the bucket when granted, so a worker that dies with
--                       unspent tokens takes them with it: it can never over-spend more than its last
--                       grant, and the fleet never more than the bucket holds.
--     polls first       calls already waiting for a token (polls of submitted jobs, ratings, closes)
--                       are granted before new submissions, across workers: when one worker's waiting
--                       calls get less than they asked, polls_short_until stops tokens for any
--                       worker's new submissions for 200 ms.
--     in flight         a site's max_in_flight holds across workers: the grant counts the site's
--                       submitting and polling rows, minus slots other workers reserved in the last
--                       second and have not claimed yet, and reserves the slots it hands out.
--     block (429)       a 429 from Uppzy empties the bucket and moves refilled_at to blocked_until
--                       (Retry-After, or a back-off), so no worker gets a token before then; it cuts
--                       rate_factor by 30% (at most once a second, however many workers saw the
--                       429s). The factor climbs back by 0.05 a second while no 429 comes (from 0.7
--                       back to requests_per_s in 6 s), never above 1: a lone 429 (two clocks' buckets
--                       never line up exactly) costs little, a vendor limit below the configured one
--                       is found in a few cuts. A site with no configured limit gets learned_rate: the
--                       rate the fleet was sending at, at 0.7 of it, then the same climb; after a
--                       minute without a 429 at a factor of 1 the learned limit is dropped and the
--                       site is unlimited again.
--
-- Sites with no limit (requests_per_s NULL and nothing learned) have no row: the grant touches only
-- budgeted sites (a worker asks about its others about once a second while busy). The table has no foreign key to uppzy.sites, so the default
-- site (UPPZY_SITE_ID), which needs no row there, can learn from a 429 too; deleting a site leaves a
-- harmless row. uppzy.site_limits shows each site's effective rate, block and use.

CREATE TABLE uppzy.site_budgets (
  site_id         text PRIMARY KEY,
  tokens          double precision NOT NULL,           -- tokens in the bucket at refilled_at
  refilled_at     timestamptz NOT NULL,                -- refill counts from here (may be in the future: blocked)
  rate_factor     double precision NOT NULL DEFAULT 1, -- AIMD: the share of the limit in force, (0, 1]
  learned_rate    double precision,                    -- requests/s learned from 429s, for a site without a limit
  blocked_until   timestamptz,                         -- the last 429's end: no token before it
  last_429_at     timestamptz,
  rate_limited    bigint NOT NULL DEFAULT 0,           -- 429s reported by workers
  granted         bigint NOT NULL DEFAULT 0,           -- tokens handed out, ever
  last_grant_at   timestamptz,
  reserved        integer NOT NULL DEFAULT 0,          -- in-flight slots handed out and maybe not claimed yet
  reserved_until  timestamptz,                         -- `reserved` counts until then
  polls_short_until timestamptz,                       -- a worker's waiting polls went short: no tokens
                                                       -- for new submissions until then (polls first)
  CONSTRAINT site_budgets_site_id_valid
    CHECK (site_id ~ '^[A-Za-z0-9._-]{1,128}$' AND site_id NOT IN ('.', '..')),
  CONSTRAINT site_budgets_tokens_finite CHECK (tokens >= 0 AND tokens < 'Infinity'::float8),
  CONSTRAINT site_budgets_rate_factor_range CHECK (rate_factor > 0 AND rate_factor <= 1),
  CONSTRAINT site_budgets_learned_rate_positive
    CHECK (learned_rate > 0 AND learned_rate < 'Infinity'::float8),
  CONSTRAINT site_budgets_reserved_positive CHECK (reserved >= 0)
);

COMMENT ON TABLE uppzy.site_budgets IS
  'Each budgeted site''s shared token bucket and what 429s taught it; written by workers only '
  '(see uppzy.site_limits to read it).';

-- Per site (every row of uppzy.sites, and any budget row of a site without one, such as the default
-- site after a 429): the configured limit, the rate in force now, the block, and the budget's use.
CREATE VIEW uppzy.site_limits AS
SELECT coalesce(s.site_id, b.site_id) AS site_id,
       s.requests_per_s,
       s.burst,
       s.max_in_flight,
       round((coalesce(s.requests_per_s::float8, b.learned_rate) * coalesce(b.rate_factor, 1))::numeric, 3)
         AS effective_rate_per_s,
       coalesce(b.rate_factor, 1) AS rate_factor,
       b.learned_rate,
       CASE WHEN b.blocked_until > now() THEN b.blocked_until END AS blocked_until,
       coalesce(b.rate_limited, 0) AS rate_limited,
       b.last_429_at,
       coalesce(b.granted, 0) AS tokens_granted,
       b.last_grant_at
FROM uppzy.sites s
FULL JOIN uppzy.site_budgets b ON b.site_id = s.site_id;

COMMENT ON VIEW uppzy.site_limits IS
  'Per site: configured limit, effective rate (AIMD after 429s), current block, tokens granted.';

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'uppzy_worker') THEN
    GRANT SELECT, INSERT, UPDATE ON uppzy.site_budgets TO uppzy_worker;
    -- A 429 counts the live workers serving the site (the fleet rate a site without a limit learns).
    GRANT SELECT ON uppzy.site_limits, uppzy.live_worker_sites TO uppzy_worker;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'uppzy_operator') THEN
    GRANT SELECT ON uppzy.site_budgets, uppzy.site_limits TO uppzy_operator;
  END IF;
END;
$$;
