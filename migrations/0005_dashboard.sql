-- 0005: indexes for the jobs listing of `uppzy-worker dashboard` (GET /api/jobs).
--
-- The listing is newest first with keyset pagination: ORDER BY created_at DESC, id DESC, and the next
-- page starts after the last row seen, WHERE (created_at, id) < ($1, $2). It is one branch per state,
-- each naming its state as a literal, merged (UNION ALL, then the first `limit` rows): a branch is a
-- short backward range scan of one partial index that stops after `limit` rows, however many millions
-- of rows the table holds and whichever page is asked for. A time range (since, until) is a range of
-- created_at in the same indexes.
--
--   finished states (the bulk of the table): the three indexes below, whose leading columns are the
--     filter and the state (state; error_kind, state; session_id, state) followed by (created_at, id),
--     so a branch with a filter reads only the rows it returns, even when its state has none;
--   queued, submitting, polling, retrying: chat_jobs_active_state_idx (state, created_at) of 0002;
--     those rows are few, and other filters are checked on them as they are read;
--   job_key: the unique index of 0001.
--
-- Why only finished rows: every state change already updates an indexed column (state), so it is
-- never a HOT update and inserts an entry into every index whose predicate the new row matches. A job
-- lives through about four row versions (queued, submitting, polling, completed); an index over all
-- rows would take four entries per job, these take one (when the job finishes; one more per retry).
-- See docs/benchmarks.md for what they cost the worker's writes.

CREATE INDEX chat_jobs_finished_created_idx ON uppzy.chat_jobs (state, created_at, id)
  WHERE state IN ('completed', 'failed', 'cancelled');

CREATE INDEX chat_jobs_finished_error_kind_idx ON uppzy.chat_jobs (error_kind, state, created_at, id)
  WHERE state IN ('completed', 'failed', 'cancelled') AND error_kind IS NOT NULL;

-- Also what a support person asks first: every job of one conversation.
CREATE INDEX chat_jobs_finished_session_idx ON uppzy.chat_jobs (session_id, state, created_at, id)
  WHERE state IN ('completed', 'failed', 'cancelled');
