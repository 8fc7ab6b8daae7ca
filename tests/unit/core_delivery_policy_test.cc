// Table tests of the delivery decisions (ratings and session closes) and of the delivery write builders:
// one row per edge, no database, no network.
#include <gtest/gtest.h>

#include "uppzy/delivery_policy.h"
#include "uppzy/delivery_write.h"

namespace uppzy {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kNow = TimePoint(seconds(1'700'000'000));

Policy TestPolicy() {
  Policy p;
  p.backoff_base = milliseconds(1000);
  p.backoff_max = milliseconds(60000);
  p.retry_after_max = milliseconds(600000);
  return p;
}

DeliveryContext Feedback(int attempt, int max_attempts = 3) {
  return {DeliveryKind::kFeedback, attempt, max_attempts};
}
DeliveryContext Close(int attempt, int max_attempts = 3) {
  return {DeliveryKind::kSessionClose, attempt, max_attempts};
}

Outcome Delivered(std::string submitted_at = {}) {
  Outcome o = Outcome::Of(OutcomeKind::kDelivered, 200);
  o.feedback_submitted_at = std::move(submitted_at);
  return o;
}

Outcome RateLimited(std::optional<milliseconds> retry_after) {
  Outcome o = Outcome::Of(OutcomeKind::kRateLimited, 429, "HTTP 429");
  o.retry_after = retry_after;
  return o;
}

struct Case {
  const char* name;
  DeliveryContext delivery;
  Outcome outcome;
  DeliveryAction action;
  ErrorKind kind;
  milliseconds at_offset;  // expected `at - now` (jitter 0.5)
  int http_status;
};

class DecideDeliveryTable : public ::testing::TestWithParam<Case> {};

TEST_P(DecideDeliveryTable, Decides) {
  const Case& c = GetParam();
  DeliveryTransition t = DecideDelivery(c.delivery, c.outcome, kNow, TestPolicy(), 0.5);
  EXPECT_EQ(ToString(t.action), ToString(c.action)) << c.name;
  EXPECT_EQ(ToString(t.error_kind), ToString(c.kind)) << c.name;
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(t.at - kNow).count(), c.at_offset.count()) << c.name;
  EXPECT_EQ(t.http_status, c.http_status) << c.name;
}

// Backoff(n) with base 1000, jitter 0.5: d = 1000 * 2^(n-1), delay = 0.75 d.
const Case kCases[] = {
    {"rating delivered", Feedback(1), Delivered("2025-03-01T12:00:00Z"), DeliveryAction::kDeliver,
     ErrorKind::kNone, milliseconds(0), 200},
    {"repeated rating delivered without timestamp", Feedback(2), Delivered(), DeliveryAction::kDeliver,
     ErrorKind::kNone, milliseconds(0), 200},
    {"close delivered", Close(1), Delivered(), DeliveryAction::kDeliver, ErrorKind::kNone, milliseconds(0),
     200},
    {"409 on a close means already closed: delivered", Close(1), Outcome::Of(OutcomeKind::kBadRequest, 409),
     DeliveryAction::kDeliver, ErrorKind::kNone, milliseconds(0), 409},
    {"409 on a rating (request not completed) fails", Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 409),
     DeliveryAction::kFail, ErrorKind::kBadRequest, milliseconds(0), 409},
    {"400 on a rating fails at once", Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 400),
     DeliveryAction::kFail, ErrorKind::kBadRequest, milliseconds(0), 400},
    {"404 on a rating fails at once", Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 404),
     DeliveryAction::kFail, ErrorKind::kBadRequest, milliseconds(0), 404},
    {"413 fails", Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 413), DeliveryAction::kFail,
     ErrorKind::kBadRequest, milliseconds(0), 413},
    {"422 fails", Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 422), DeliveryAction::kFail,
     ErrorKind::kBadRequest, milliseconds(0), 422},
    {"400 on a close fails", Close(1), Outcome::Of(OutcomeKind::kBadRequest, 400), DeliveryAction::kFail,
     ErrorKind::kBadRequest, milliseconds(0), 400},
    {"404 on a close fails", Close(1), Outcome::Of(OutcomeKind::kBadRequest, 404), DeliveryAction::kFail,
     ErrorKind::kBadRequest, milliseconds(0), 404},
    {"429 first attempt backs off", Feedback(1), RateLimited(std::nullopt), DeliveryAction::kRetry,
     ErrorKind::kRateLimited, milliseconds(750), 429},
    {"429 honours Retry-After", Feedback(1), RateLimited(seconds(7)), DeliveryAction::kRetry,
     ErrorKind::kRateLimited, milliseconds(7000), 429},
    {"429 Retry-After is bounded", Close(1), RateLimited(seconds(100000)), DeliveryAction::kRetry,
     ErrorKind::kRateLimited, milliseconds(600000), 429},
    {"429 on the last attempt fails", Feedback(3), RateLimited(seconds(7)), DeliveryAction::kFail,
     ErrorKind::kRateLimited, milliseconds(0), 429},
    {"503 second attempt backs off twice as long", Feedback(2), Outcome::Of(OutcomeKind::kServerError, 503),
     DeliveryAction::kRetry, ErrorKind::kServerError, milliseconds(1500), 503},
    {"500 on the last attempt fails", Close(3), Outcome::Of(OutcomeKind::kServerError, 500),
     DeliveryAction::kFail, ErrorKind::kServerError, milliseconds(0), 500},
    {"network error retried", Close(1), Outcome::Of(OutcomeKind::kNetwork, 0, "timeout"),
     DeliveryAction::kRetry, ErrorKind::kNetwork, milliseconds(750), 0},
    {"network error on the only attempt fails", Feedback(1, 1), Outcome::Of(OutcomeKind::kNetwork),
     DeliveryAction::kFail, ErrorKind::kNetwork, milliseconds(0), 0},
    {"unreadable body retried", Feedback(1), Outcome::Of(OutcomeKind::kInvalidResponse, 200),
     DeliveryAction::kRetry, ErrorKind::kInvalidResponse, milliseconds(750), 200},
    {"unexpected outcome kind is an invalid response", Feedback(1), Outcome::Accepted("r"),
     DeliveryAction::kRetry, ErrorKind::kInvalidResponse, milliseconds(750), 202},
    {"backoff is capped", Feedback(20, 30), Outcome::Of(OutcomeKind::kServerError, 502),
     DeliveryAction::kRetry, ErrorKind::kServerError, milliseconds(45000), 502},
    {"401 is an incident", Feedback(1), Outcome::Of(OutcomeKind::kUnauthorized, 401),
     DeliveryAction::kIncident, ErrorKind::kUnauthorized, milliseconds(0), 401},
    {"403 is an incident even on the last attempt", Close(3), Outcome::Of(OutcomeKind::kForbidden, 403),
     DeliveryAction::kIncident, ErrorKind::kForbidden, milliseconds(0), 403},
};

INSTANTIATE_TEST_SUITE_P(Table, DecideDeliveryTable, ::testing::ValuesIn(kCases));

TEST(DecideDelivery, KeepsFeedbackSubmittedAtOfARating) {
  DeliveryTransition t =
      DecideDelivery(Feedback(1), Delivered("2025-03-01T12:00:00.250Z"), kNow, TestPolicy(), 0);
  ASSERT_TRUE(t.feedback_submitted_at.has_value());
  EXPECT_EQ(std::chrono::duration_cast<milliseconds>(t.feedback_submitted_at->time_since_epoch()).count(),
            1740830400250LL);
  EXPECT_FALSE(DecideDelivery(Feedback(1), Delivered(), kNow, TestPolicy(), 0).feedback_submitted_at);
  EXPECT_FALSE(
      DecideDelivery(Feedback(1), Delivered("yesterday"), kNow, TestPolicy(), 0).feedback_submitted_at)
      << "an unreadable timestamp is dropped; the rating is still delivered";
}

TEST(DecideDelivery, MessagesNameTheStatus) {
  EXPECT_EQ(
      DecideDelivery(Feedback(1), Outcome::Of(OutcomeKind::kBadRequest, 404), kNow, TestPolicy(), 0).message,
      "HTTP 404");
  EXPECT_EQ(DecideDelivery(Feedback(1),
                           Outcome::Of(OutcomeKind::kBadRequest, 409, "HTTP 409: request not completed"),
                           kNow, TestPolicy(), 0)
                .message,
            "HTTP 409: request not completed");
}

ClaimedDelivery Claimed(DeliveryKind kind, int attempt) {
  ClaimedDelivery d;
  d.id = 7;
  d.kind = kind;
  d.session_id = "s";
  if (kind == DeliveryKind::kFeedback) {
    d.request_id = "req_1";
    d.feedback = "good";
  }
  d.attempt = attempt;
  d.max_attempts = 3;
  return d;
}

TEST(DeliveryWrites, DeliveredCarriesStatusTimestampAndSentRating) {
  DeliveryTransition t =
      DecideDelivery(Feedback(1), Delivered("2025-03-01T12:00:00Z"), kNow, TestPolicy(), 0);
  DeliveryWrite w = WriteDeliveryOutcome(Claimed(DeliveryKind::kFeedback, 1), t, kNow);
  EXPECT_EQ(w.id, 7);
  EXPECT_EQ(w.expected_attempt, 1);
  EXPECT_EQ(w.new_state, DeliveryState::kDelivered);
  EXPECT_EQ(w.delivered_http_status, 200);
  EXPECT_TRUE(w.feedback_submitted_at.has_value());
  EXPECT_EQ(w.sent_feedback, "good");
  EXPECT_FALSE(w.error.has_value());
  EXPECT_EQ(w.attempts_delta, 0);
}

TEST(DeliveryWrites, RetryAndFailAppendTheError) {
  const ClaimedDelivery d = Claimed(DeliveryKind::kFeedback, 2);
  DeliveryTransition retry = DecideDelivery(Feedback(2), RateLimited(seconds(7)), kNow, TestPolicy(), 0);
  DeliveryWrite w = WriteDeliveryOutcome(d, retry, kNow);
  EXPECT_EQ(w.new_state, DeliveryState::kRetrying);
  ASSERT_TRUE(w.run_at.has_value());
  EXPECT_EQ(*w.run_at, kNow + seconds(7));
  ASSERT_TRUE(w.error.has_value());
  EXPECT_EQ(w.error->kind, ErrorKind::kRateLimited);
  EXPECT_EQ(w.error->attempt, 2);
  EXPECT_EQ(w.error->http_status, 429);
  EXPECT_EQ(w.error->request_id, "req_1");

  DeliveryTransition fail =
      DecideDelivery(Close(1), Outcome::Of(OutcomeKind::kBadRequest, 400), kNow, TestPolicy(), 0);
  w = WriteDeliveryOutcome(Claimed(DeliveryKind::kSessionClose, 1), fail, kNow);
  EXPECT_EQ(w.new_state, DeliveryState::kFailed);
  EXPECT_EQ(w.kind, DeliveryKind::kSessionClose);
  ASSERT_TRUE(w.error.has_value());
  EXPECT_EQ(w.error->kind, ErrorKind::kBadRequest);
  EXPECT_TRUE(w.error->request_id.empty());
}

TEST(DeliveryWrites, IncidentAndHandBackReturnTheAttempt) {
  DeliveryTransition incident =
      DecideDelivery(Feedback(1), Outcome::Of(OutcomeKind::kUnauthorized, 401), kNow, TestPolicy(), 0);
  DeliveryWrite w = WriteDeliveryOutcome(Claimed(DeliveryKind::kFeedback, 1), incident, kNow);
  EXPECT_EQ(w.new_state, DeliveryState::kQueued);
  EXPECT_EQ(w.attempts_delta, -1);
  EXPECT_FALSE(w.run_at.has_value());
  ASSERT_TRUE(w.error.has_value());
  EXPECT_EQ(w.error->kind, ErrorKind::kUnauthorized);

  w = WriteDeliveryHandBack(Claimed(DeliveryKind::kSessionClose, 2), std::nullopt);
  EXPECT_EQ(w.new_state, DeliveryState::kRetrying) << "an earlier attempt was made";
  EXPECT_EQ(w.attempts_delta, -1);
  EXPECT_FALSE(w.error.has_value());
}

TEST(DeliveryNames, RoundTrip) {
  for (DeliveryKind k : {DeliveryKind::kFeedback, DeliveryKind::kSessionClose}) {
    EXPECT_EQ(ParseDeliveryKind(ToString(k)), k);
  }
  EXPECT_EQ(ToString(DeliveryKind::kSessionClose), "session_close");
  for (DeliveryState s : {DeliveryState::kQueued, DeliveryState::kSending, DeliveryState::kRetrying,
                          DeliveryState::kDelivered, DeliveryState::kFailed}) {
    EXPECT_EQ(ParseDeliveryState(ToString(s)), s);
  }
  EXPECT_FALSE(ParseDeliveryState("completed").has_value());
  EXPECT_TRUE(IsTerminal(DeliveryState::kDelivered));
  EXPECT_TRUE(IsTerminal(DeliveryState::kFailed));
  EXPECT_FALSE(IsTerminal(DeliveryState::kRetrying));
}

}  // namespace
}  // namespace uppzy
