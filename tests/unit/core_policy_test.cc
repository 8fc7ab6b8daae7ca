// Table tests of the state machine's decisions: one row per edge, no database, no network.
#include <gtest/gtest.h>

#include "uppzy/job_write.h"
#include "uppzy/policy.h"

namespace uppzy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kNow = TimePoint(seconds(1'700'000'000));

Policy TestPolicy() {
  Policy p;
  p.poll_interval = milliseconds(2500);
  p.poll_timeout = milliseconds(45000);
  p.backoff_base = milliseconds(1000);
  p.backoff_max = milliseconds(60000);
  p.retry_after_max = milliseconds(600000);
  return p;
}

JobContext Submit(int attempt, int max_attempts = 3) {
  JobContext j;
  j.phase = Phase::kSubmit;
  j.attempt = attempt;
  j.max_attempts = max_attempts;
  return j;
}

Outcome ProcessingRetryAfter(milliseconds retry_after) {
  Outcome o = Outcome::Status("processing");
  o.retry_after = retry_after;
  return o;
}

JobContext Poll(int attempt, milliseconds until_deadline, int poll_errors = 0, int max_attempts = 3) {
  JobContext j;
  j.phase = Phase::kPoll;
  j.attempt = attempt;
  j.max_attempts = max_attempts;
  j.poll_deadline = kNow + until_deadline;
  j.poll_errors = poll_errors;
  return j;
}

Outcome RateLimited(std::optional<milliseconds> retry_after) {
  Outcome o = Outcome::Of(OutcomeKind::kRateLimited, 429, "HTTP 429");
  o.retry_after = retry_after;
  return o;
}

struct Case {
  const char* name;
  JobContext job;
  Outcome outcome;
  Action action;
  ErrorKind kind;
  milliseconds at_offset;  // expected `at - now` (jitter 0.5 unless stated)
};

class DecideTable : public ::testing::TestWithParam<Case> {};

TEST_P(DecideTable, Decides) {
  const Case& c = GetParam();
  Transition t = Decide(c.job, c.outcome, kNow, TestPolicy(), 0.5);
  EXPECT_EQ(static_cast<int>(t.action), static_cast<int>(c.action)) << c.name;
  EXPECT_EQ(ToString(t.error_kind), ToString(c.kind)) << c.name;
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(t.at - kNow).count(), c.at_offset.count()) << c.name;
}

// Backoff(n) with base 1000, jitter 0.5: d = 1000 * 2^(n-1), delay = 0.75 d.
const Case kCases[] = {
    // Submissions.
    {"accepted", Submit(1), Outcome::Accepted("r1"), Action::kAccept, ErrorKind::kNone, milliseconds(2500)},
    {"429 first attempt backs off", Submit(1), RateLimited(std::nullopt), Action::kRetry,
     ErrorKind::kRateLimited, milliseconds(750)},
    {"429 honours Retry-After", Submit(1), RateLimited(seconds(7)), Action::kRetry, ErrorKind::kRateLimited,
     milliseconds(7000)},
    {"429 Retry-After is bounded", Submit(1), RateLimited(seconds(100000)), Action::kRetry,
     ErrorKind::kRateLimited, milliseconds(600000)},
    {"429 on last attempt fails", Submit(3), RateLimited(std::nullopt), Action::kFail,
     ErrorKind::kRateLimited, milliseconds(0)},
    {"503 second attempt backs off twice as long", Submit(2), Outcome::Of(OutcomeKind::kServerError, 503),
     Action::kRetry, ErrorKind::kServerError, milliseconds(1500)},
    {"503 on last attempt fails", Submit(3), Outcome::Of(OutcomeKind::kServerError, 503), Action::kFail,
     ErrorKind::kServerError, milliseconds(0)},
    {"network error retries", Submit(1), Outcome::Of(OutcomeKind::kNetwork, 0, "timeout"), Action::kRetry,
     ErrorKind::kNetwork, milliseconds(750)},
    {"unreadable submit body retries and counts", Submit(1), Outcome::Of(OutcomeKind::kInvalidResponse, 200),
     Action::kRetry, ErrorKind::kInvalidResponse, milliseconds(750)},
    {"unreadable submit body on last attempt fails", Submit(3),
     Outcome::Of(OutcomeKind::kInvalidResponse, 200), Action::kFail, ErrorKind::kInvalidResponse,
     milliseconds(0)},
    {"400 fails at once", Submit(1), Outcome::Of(OutcomeKind::kBadRequest, 400), Action::kFail,
     ErrorKind::kBadRequest, milliseconds(0)},
    {"422 fails at once", Submit(1), Outcome::Of(OutcomeKind::kBadRequest, 422), Action::kFail,
     ErrorKind::kBadRequest, milliseconds(0)},
    {"401 on submit is an incident", Submit(1), Outcome::Of(OutcomeKind::kUnauthorized, 401),
     Action::kIncident, ErrorKind::kUnauthorized, milliseconds(0)},
    {"403 on last attempt is still an incident", Submit(3), Outcome::Of(OutcomeKind::kForbidden, 403),
     Action::kIncident, ErrorKind::kForbidden, milliseconds(0)},
    {"a status answer to a submit is invalid", Submit(1), Outcome::Status("processing"), Action::kRetry,
     ErrorKind::kInvalidResponse, milliseconds(750)},
    // Polls.
    {"in progress polls again after the interval", Poll(1, seconds(30)), Outcome::Status("processing"),
     Action::kAwaitPoll, ErrorKind::kNone, milliseconds(2500)},
    {"unknown status is in progress", Poll(1, seconds(30)), Outcome::Status("thinking_hard"),
     Action::kAwaitPoll, ErrorKind::kNone, milliseconds(2500)},
    {"next poll never passes the deadline", Poll(1, milliseconds(1000)), Outcome::Status("processing"),
     Action::kAwaitPoll, ErrorKind::kNone, milliseconds(1000)},
    {"in progress with Retry-After waits for it", Poll(1, seconds(30)),
     ProcessingRetryAfter(milliseconds(8000)), Action::kAwaitPoll, ErrorKind::kNone, milliseconds(8000)},
    {"in progress with a short Retry-After keeps the interval", Poll(1, seconds(30)),
     ProcessingRetryAfter(milliseconds(100)), Action::kAwaitPoll, ErrorKind::kNone, milliseconds(2500)},
    {"in progress with Retry-After past the deadline polls at the deadline", Poll(1, seconds(5)),
     ProcessingRetryAfter(milliseconds(8000)), Action::kAwaitPoll, ErrorKind::kNone, milliseconds(5000)},
    {"completed", Poll(1, seconds(30)), Outcome::Status("completed", "echo: hi"), Action::kComplete,
     ErrorKind::kNone, milliseconds(0)},
    {"completed after the deadline still completes", Poll(1, -seconds(5)), Outcome::Status("completed", "a"),
     Action::kComplete, ErrorKind::kNone, milliseconds(0)},
    {"upstream failed", Poll(1, seconds(30)), Outcome::Status("failed", "", "no_docs"), Action::kFail,
     ErrorKind::kUpstreamFailed, milliseconds(0)},
    {"deadline passed with attempts left retries", Poll(1, milliseconds(0)), Outcome::Status("processing"),
     Action::kRetry, ErrorKind::kPollTimeout, milliseconds(750)},
    {"deadline passed on last attempt fails", Poll(3, -seconds(1)), Outcome::Status("processing"),
     Action::kFail, ErrorKind::kPollTimeout, milliseconds(0)},
    {"poll 500 backs off from the poll interval", Poll(1, seconds(30)),
     Outcome::Of(OutcomeKind::kServerError, 500), Action::kAwaitPoll, ErrorKind::kServerError,
     milliseconds(1875)},
    {"third failed poll in a row backs off more", Poll(1, seconds(30), 2),
     Outcome::Of(OutcomeKind::kServerError, 500), Action::kAwaitPoll, ErrorKind::kServerError,
     milliseconds(7500)},
    {"poll 429 honours Retry-After within the deadline", Poll(1, seconds(30)), RateLimited(seconds(7)),
     Action::kAwaitPoll, ErrorKind::kRateLimited, milliseconds(7000)},
    {"poll error never passes the deadline", Poll(1, milliseconds(500)), RateLimited(seconds(7)),
     Action::kAwaitPoll, ErrorKind::kRateLimited, milliseconds(500)},
    {"garbage poll body polls again, no attempt used", Poll(3, seconds(30)),
     Outcome::Of(OutcomeKind::kInvalidResponse, 200), Action::kAwaitPoll, ErrorKind::kInvalidResponse,
     milliseconds(1875)},
    {"poll error after the deadline times out", Poll(1, -seconds(1)), Outcome::Of(OutcomeKind::kNetwork),
     Action::kRetry, ErrorKind::kPollTimeout, milliseconds(750)},
    {"poll 404 fails", Poll(1, seconds(30)), Outcome::Of(OutcomeKind::kBadRequest, 404), Action::kFail,
     ErrorKind::kBadRequest, milliseconds(0)},
    {"poll 401 is an incident", Poll(2, seconds(30)), Outcome::Of(OutcomeKind::kUnauthorized, 401),
     Action::kIncident, ErrorKind::kUnauthorized, milliseconds(0)},
};

INSTANTIATE_TEST_SUITE_P(Policy, DecideTable, ::testing::ValuesIn(kCases));

TEST(Decide, AcceptSetsDeadlineFromPollTimeout) {
  Transition t = Decide(Submit(1), Outcome::Accepted("r1"), kNow, TestPolicy(), 0.5);
  EXPECT_EQ(t.deadline - kNow, milliseconds(45000));
}

TEST(Decide, AdaptivePollsFollowTheSitesPlanWithinTheBounds) {
  // A plan learned from answers that take 12 s or so: its first poll comes later than the fixed tick.
  std::vector<AnswerInterval> seen;
  for (int i = 0; i < 400; ++i) seen.push_back({9000.0 + 15 * i, 9000.0 + 15 * i + 1});
  const PollPlan plan = PollPlan::Build(AnswerTimeEstimate::Fit(seen), ScheduleOf(TestPolicy()));
  ASSERT_TRUE(plan.adaptive());
  ASSERT_GT(plan.offsets().front(), milliseconds(2500));

  JobContext submit = Submit(1);
  submit.plan = &plan;
  Transition t = Decide(submit, Outcome::Accepted("r1"), kNow, TestPolicy(), 0.5);
  EXPECT_EQ(t.action, Action::kAccept);
  EXPECT_EQ(t.at - kNow, plan.offsets().front());
  EXPECT_EQ(t.deadline - kNow, milliseconds(45000));

  // Still processing at the plan's first poll: the next is the plan's first one an interval later.
  JobContext poll = Poll(1, milliseconds(45000) - plan.offsets().front());
  poll.accepted_at = kNow - plan.offsets().front();
  poll.plan = &plan;
  t = Decide(poll, Outcome::Status("processing"), kNow, TestPolicy(), 0.5);
  EXPECT_EQ(t.action, Action::kAwaitPoll);
  EXPECT_GE(t.at - kNow, milliseconds(2500));
  EXPECT_EQ(t.at - poll.accepted_at, plan.offsets()[1]);
  // Without a plan (fixed mode, or too few answers yet) it is the fixed tick.
  poll.plan = nullptr;
  EXPECT_EQ(Decide(poll, Outcome::Status("processing"), kNow, TestPolicy(), 0.5).at - kNow,
            milliseconds(2500));
}

TEST(Decide, FailedPollIsMarkedAsPollError) {
  Transition t = Decide(Poll(1, seconds(30)), Outcome::Of(OutcomeKind::kNetwork), kNow, TestPolicy(), 0.5);
  EXPECT_TRUE(t.poll_error);
  t = Decide(Poll(1, seconds(30)), Outcome::Status("processing"), kNow, TestPolicy(), 0.5);
  EXPECT_FALSE(t.poll_error);
}

TEST(Decide, UpstreamFailureKeepsUppzysErrorText) {
  Transition t =
      Decide(Poll(1, seconds(30)), Outcome::Status("failed", "", "index_missing"), kNow, TestPolicy(), 0);
  EXPECT_EQ(t.message, "index_missing");
}

TEST(Backoff, GrowsExponentiallyWithJitterAndCap) {
  const milliseconds base(1000), cap(60000);
  EXPECT_EQ(Backoff(1, base, cap, 0.0), milliseconds(500));
  EXPECT_EQ(Backoff(1, base, cap, 0.999999), milliseconds(1000));
  EXPECT_EQ(Backoff(3, base, cap, 0.0), milliseconds(2000));
  EXPECT_EQ(Backoff(10, base, cap, 0.0), milliseconds(30000));
  EXPECT_EQ(Backoff(1000, base, cap, 0.999999), milliseconds(60000));
  EXPECT_EQ(Backoff(0, base, cap, 0.0), milliseconds(500));
  EXPECT_EQ(Backoff(2, base, cap, -3.0), milliseconds(1000));
  EXPECT_EQ(Backoff(2, base, cap, 7.0), milliseconds(2000));
}

// The one retry-or-fail rule that jobs (Decide) and deliveries (DecideDelivery) share.
struct RetryCase {
  const char* name;
  int attempt;
  int max_attempts;
  std::optional<milliseconds> retry_after;
  std::optional<milliseconds> want_at_offset;  // nullopt: fail for good
};

TEST(RetryOrFail, RetriesWhileAttemptsRemain) {
  const RetryCase cases[] = {
      {"first of three backs off", 1, 3, std::nullopt, milliseconds(750)},
      {"second of three backs off twice as long", 2, 3, std::nullopt, milliseconds(1500)},
      {"last attempt fails", 3, 3, std::nullopt, std::nullopt},
      {"past the last attempt fails", 4, 3, std::nullopt, std::nullopt},
      {"last attempt fails even with Retry-After", 3, 3, seconds(7), std::nullopt},
      {"Retry-After replaces the backoff", 1, 3, seconds(7), milliseconds(7000)},
      {"Retry-After of zero retries at once", 2, 3, milliseconds(0), milliseconds(0)},
      {"Retry-After is bounded by retry_after_max", 1, 3, seconds(100000), milliseconds(600000)},
      {"a negative Retry-After counts as zero", 1, 3, milliseconds(-5000), milliseconds(0)},
      {"a single attempt never retries", 1, 1, std::nullopt, std::nullopt},
  };
  for (const auto& c : cases) {
    const auto at = RetryOrFail(c.attempt, c.max_attempts, c.retry_after, kNow, TestPolicy(), 0.5);
    ASSERT_EQ(at.has_value(), c.want_at_offset.has_value()) << c.name;
    if (at) {
      EXPECT_EQ(std::chrono::duration_cast<milliseconds>(*at - kNow), *c.want_at_offset) << c.name;
    }
  }
}

TEST(Describe, SaysTheDetailElseTheStatusElseNoResponse) {
  const std::pair<Outcome, const char*> cases[] = {
      {Outcome::Of(OutcomeKind::kServerError, 503, "HTTP 503: upstream down"), "HTTP 503: upstream down"},
      {Outcome::Of(OutcomeKind::kBadRequest, 404), "HTTP 404"},
      {Outcome::Of(OutcomeKind::kNetwork, 0, "connection reset"), "connection reset"},
      {Outcome::Of(OutcomeKind::kNetwork), "no response"},
  };
  for (const auto& [outcome, want] : cases) EXPECT_EQ(Describe(outcome), want);
}

TEST(Names, StatesAndKindsRoundTrip) {
  for (auto s : {JobState::kQueued, JobState::kSubmitting, JobState::kPolling, JobState::kRetrying,
                 JobState::kCompleted, JobState::kFailed, JobState::kCancelled}) {
    EXPECT_EQ(ParseJobState(ToString(s)), s);
  }
  EXPECT_EQ(ParseJobState("running"), std::nullopt);
  EXPECT_EQ(ToString(ErrorKind::kPollTimeout), "poll_timeout");
  EXPECT_EQ(ParseErrorKind("lease_expired"), ErrorKind::kLeaseExpired);
  EXPECT_TRUE(IsTerminal(JobState::kCancelled));
  EXPECT_FALSE(IsTerminal(JobState::kRetrying));
}

// A poll timeout says what the last poll error was, so last_error names the real cause.
struct TimeoutCase {
  const char* name;
  int poll_errors;
  const char* last_poll_error;
  Outcome final_poll;
  const char* want_message;
};

TEST(Decide, PollTimeoutNamesTheLastPollError) {
  const TimeoutCase cases[] = {
      {"plain timeout", 0, "", Outcome::Status("processing"),
       "no final status within the poll timeout of 45000 ms"},
      {"earlier errors but the last poll succeeded", 0, "HTTP 503", Outcome::Status("processing"),
       "no final status within the poll timeout of 45000 ms"},
      {"the polls before the deadline failed", 2, "HTTP 503: upstream down", Outcome::Status("processing"),
       "no final status within the poll timeout of 45000 ms; the last poll failed: HTTP 503: upstream down"},
      {"the poll at the deadline failed", 0, "", Outcome::Of(OutcomeKind::kNetwork, 0, "connection reset"),
       "no final status within the poll timeout of 45000 ms; the last poll failed: connection reset"},
  };
  for (const auto& c : cases) {
    JobContext j = Poll(1, -seconds(1), c.poll_errors);
    j.last_poll_error = c.last_poll_error;
    Transition t = Decide(j, c.final_poll, kNow, TestPolicy(), 0.5);
    EXPECT_EQ(t.error_kind, ErrorKind::kPollTimeout) << c.name;
    EXPECT_EQ(t.message, c.want_message) << c.name;
  }
}

TEST(WriteRejected, FailsTheRowUnderTheSameGuardWithoutTheRefusedContent) {
  HeldJob h;
  h.id = 7;
  h.attempt = 2;
  h.row_state = JobState::kPolling;
  h.request_id = "req-7";
  h.polls = 4;
  JobWrite refused = WriteCompleted(h, "an answer", "{}");
  JobWrite w = WriteRejected(refused, "invalid byte sequence (SQLSTATE 22021)", kNow);
  EXPECT_EQ(w.id, 7);
  EXPECT_EQ(w.expected_state, JobState::kPolling);
  EXPECT_EQ(w.expected_attempt, 2);
  EXPECT_EQ(w.new_state, JobState::kFailed);
  EXPECT_FALSE(w.answer.has_value());
  EXPECT_FALSE(w.result_json.has_value());
  ASSERT_TRUE(w.error.has_value());
  EXPECT_EQ(w.error->kind, ErrorKind::kInvalidResponse);
  EXPECT_EQ(w.error->message,
            "the database refused to store this outcome: invalid byte sequence (SQLSTATE 22021)");
}

}  // namespace
}  // namespace uppzy
