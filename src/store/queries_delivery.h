// Every SQL statement on the delivery tables (uppzy.chat_feedback, uppzy.session_closes), one named
// query each. The two tables share their bookkeeping columns, so each statement is one template:
// DeliveryStore substitutes {table} (chat_feedback | session_closes) and the few kind-specific
// fragments below before preparing it once per table.
#pragma once

#include "store/queries.h"  // UPPZY_CLAIM_SCOPE

namespace uppzy::store::sql {

// $1 worker, $2 lease ms, $3 text[] sites, $4 int[] their limits, $5 default site (see
// UPPZY_CLAIM_SCOPE in queries.h), $6 the most rows in all. Oldest run_at first within a site and
// across them (rows locked beyond $6 are released at commit). {claimed}: request_id, feedback (or two empty
// texts for a close); the last column is the row's site, NULL read as the default site.
inline constexpr const char* kDeliveriesClaim =
    "WITH " UPPZY_CLAIM_SCOPE("{table}", "j.state IN ('queued', 'retrying')", "0", "j.run_at, j.id") R"sql(
  ORDER BY p.run_at, p.id
  LIMIT $6
), u AS (
  UPDATE uppzy.{table} j
  SET state = 'sending', attempts = j.attempts + 1, locked_by = $1,
      lease_expires_at = now() + $2::bigint * interval '1 millisecond', updated_at = now()
  WHERE j.id = ANY (ARRAY(SELECT c.id FROM c))
  RETURNING j.id, j.session_id, {claimed}, j.attempts, j.max_attempts, coalesce(j.site_id, $5)
)
SELECT u.* FROM u JOIN c ON c.id = u.id ORDER BY c.run_at, c.id
)sql";
inline constexpr const char* kFeedbackClaimedColumns = "j.request_id, j.feedback";
inline constexpr const char* kSessionCloseClaimedColumns = "''::text, ''::text";

// $1 worker, $2 .. $13 the writes (see DeliveryWrite), one typed array per column, unnested side by side
// (see UPPZY_APPLY_BATCH in queries.h for the worker column and `j.id = ANY ($2)`). Guarded by holder, state
// 'sending' and attempt; every write releases the row. {resend} is true when a rating was changed while it
// was being sent (the write's sent_feedback differs from the row's feedback): a delivered or failed write
// then queues the row again with a fresh attempt budget. {extra} sets the kind's own columns. Like the jobs'
// write, it never waits on a row another session holds locked: it returns one row per write with id,
// exists, locked (by us now), applied, requeued.
inline constexpr const char* kDeliveriesApplyWrites = R"sql(
WITH u AS (
  SELECT *, $1::text AS worker FROM unnest($2::bigint[], $3::int[], $4::text[], $5::int[], $6::double precision[], $7::text[],
                       $8::int[], $9::double precision[], $10::text[], $11::text[], $12::int[], $13::jsonb[])
    AS u(id, expected_attempt, new_state, attempts_delta, run_at_ms, sent_feedback, delivered_http_status,
         feedback_submitted_at_ms, error_kind, last_error, last_http_status, error_entry)
), l AS (
  SELECT u.* FROM u JOIN uppzy.{table} j ON j.id = u.id WHERE j.id = ANY ($2::bigint[]) FOR UPDATE OF j SKIP LOCKED
), w AS (
  UPDATE uppzy.{table} j
  SET state = CASE WHEN {resend} THEN 'queued' ELSE u.new_state END,
      attempts = CASE WHEN {resend} THEN 0 ELSE j.attempts + u.attempts_delta END,
      run_at = CASE WHEN {resend} THEN now() ELSE coalesce(to_timestamp(u.run_at_ms / 1000.0), j.run_at) END,
      error_kind = coalesce(u.error_kind, j.error_kind),
      last_error = CASE WHEN u.error_kind IS NOT NULL THEN u.last_error ELSE j.last_error END,
      last_http_status = CASE WHEN u.error_kind IS NOT NULL THEN u.last_http_status ELSE j.last_http_status END,
      errors = CASE WHEN u.error_entry IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(u.error_entry) END,
      delivered_http_status = CASE WHEN u.new_state = 'delivered' THEN u.delivered_http_status
                                   ELSE j.delivered_http_status END,
      delivered_at = CASE WHEN u.new_state = 'delivered' AND NOT {resend} THEN now() END,
      finished_at = CASE WHEN u.new_state IN ('delivered', 'failed') AND NOT {resend} THEN now() END,
      {extra}
      locked_by = NULL, lease_expires_at = NULL, updated_at = now()
  FROM l AS u
  WHERE j.id = ANY ($2::bigint[]) AND j.id = u.id AND j.state = 'sending' AND j.attempts = u.expected_attempt
    AND j.locked_by = u.worker  -- not a filter on the table: see UPPZY_APPLY_BATCH in queries.h
  RETURNING j.id, j.state = 'queued' AND u.new_state IN ('delivered', 'failed') AS requeued
)
SELECT u.id,
       EXISTS (SELECT 1 FROM uppzy.{table} x WHERE x.id = u.id),
       EXISTS (SELECT 1 FROM l WHERE l.id = u.id),
       EXISTS (SELECT 1 FROM w WHERE w.id = u.id),
       coalesce((SELECT w.requeued FROM w WHERE w.id = u.id), false)
FROM u
)sql";
inline constexpr const char* kFeedbackResend =
    "(u.new_state IN ('delivered', 'failed') AND u.sent_feedback IS NOT NULL "
    "AND j.feedback IS DISTINCT FROM u.sent_feedback)";
inline constexpr const char* kSessionCloseResend = "false";
// Uppzy's first acknowledgement is kept: a second rating is acknowledged without a timestamp.
inline constexpr const char* kFeedbackApplyExtra =
    "feedback_submitted_at = coalesce(j.feedback_submitted_at, "
    "to_timestamp(u.feedback_submitted_at_ms / 1000.0)),";
inline constexpr const char* kSessionCloseApplyExtra = "";

// $1 worker, $2 bigint[] ids, $3 lease ms. Rows another session holds locked are skipped.
inline constexpr const char* kDeliveriesRenewLeases = R"sql(
WITH l AS (
  SELECT id FROM uppzy.{table}
  WHERE id = ANY($2::bigint[]) AND locked_by = $1 AND state = 'sending'
  FOR UPDATE SKIP LOCKED
)
UPDATE uppzy.{table} j
SET lease_expires_at = now() + $3::bigint * interval '1 millisecond'
WHERE j.id = ANY (ARRAY(SELECT l.id FROM l))
RETURNING j.id
)sql";

// $1 limit. {request_id}: the row's request_id for a rating, NULL for a close.
inline constexpr const char* kDeliveriesRescueExpired = R"sql(
WITH c AS (
  SELECT id FROM uppzy.{table}
  WHERE state = 'sending' AND lease_expires_at <= now()
  LIMIT $1
  FOR UPDATE SKIP LOCKED
)
UPDATE uppzy.{table} j
SET state = CASE WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'failed' END,
    run_at = now(),
    error_kind = 'lease_expired',
    last_error = 'the worker holding the row lost its lease while sending; it is sent again (safe to repeat)',
    last_http_status = NULL,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
      'attempt', j.attempts, 'at', now(), 'kind', 'lease_expired', 'http_status', NULL,
      'message', 'lease of ' || coalesce(j.locked_by, '?') || ' expired while sending',
      'request_id', {request_id})),
    locked_by = NULL, lease_expires_at = NULL,
    finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
    updated_at = now()
WHERE j.id = ANY (ARRAY(SELECT c.id FROM c))
RETURNING j.id
)sql";
inline constexpr const char* kFeedbackRequestId = "j.request_id";
inline constexpr const char* kSessionCloseRequestId = "NULL::text";

// Each EXISTS matches one partial index exactly.
inline constexpr const char* kDeliveriesAnyUnfinished = R"sql(
SELECT EXISTS (SELECT 1 FROM uppzy.chat_feedback WHERE state IN ('queued', 'retrying'))
    OR EXISTS (SELECT 1 FROM uppzy.chat_feedback WHERE state = 'sending')
    OR EXISTS (SELECT 1 FROM uppzy.session_closes WHERE state IN ('queued', 'retrying'))
    OR EXISTS (SELECT 1 FROM uppzy.session_closes WHERE state = 'sending')
)sql";

// Wakes the workers when a changed rating was queued again by a write.
inline constexpr const char* kDeliveriesNotifyRequeued =
    "SELECT pg_notify('uppzy_chat_jobs_wakeup', 'delivery')";

// The same calls a web app makes. $1 job id, $2 rating, $3 comment (null: keep / none).
inline constexpr const char* kFeedbackRateJob = "SELECT uppzy.rate_job($1::bigint, $2::text, $3::text)";
// $1 session_id.
inline constexpr const char* kSessionClosesEnqueue = "SELECT uppzy.close_session($1::text)";

}  // namespace uppzy::store::sql
