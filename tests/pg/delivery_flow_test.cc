// One delivery round at a time, over real HTTP and a real PostgreSQL: DeliveryStore claims, the Uppzy
// client sends to the mock Uppzy server, DecideDelivery decides, the write is applied. This is the
// contract the worker's engine and coordinator drive (they add threads, batching and incidents).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mock/mock_server.h"
#include "support/support.h"
#include "uppzy/delivery_store.h"
#include "uppzy/uppzy_client.h"

namespace uppzy {
namespace {

using std::chrono::milliseconds;
using test::Exec;
using test::Query;
using test::QueryInt;

constexpr char kSite[] = "site-1";

class DeliveryFlow : public ::testing::Test {
 protected:
  void SetUp() override {
    mock::MockOptions o;
    o.api_key = "k";
    o.ready_after_ms = 0;
    mock_ = std::make_unique<mock::MockServer>(o);
    mock_->Start();
    db_ = test::MigratedDatabase();
    store_ = std::make_unique<DeliveryStore>(db_);
    client_ = MakeClient("k");
    policy_.backoff_base = milliseconds(1);
    policy_.backoff_max = milliseconds(1);
  }

  std::unique_ptr<UppzyClient> MakeClient(const std::string& key) {
    UpstreamConfig c;
    c.base_url = "http://127.0.0.1:" + std::to_string(mock_->port()) + "/api/v1";
    c.api_key = key;
    return std::make_unique<UppzyClient>(c);
  }

  // Waits for the exchange tagged `tag`.
  Outcome Await(UppzyClient& client, uint64_t tag) {
    std::vector<Completion> done;
    for (int i = 0; i < 500; ++i) {
      client.Perform(20, &done);
      for (const auto& c : done) {
        if (c.tag == tag) return c.outcome;
      }
    }
    ADD_FAILURE() << "no completion";
    return {};
  }

  // A request the mock knows, completed (or still processing with `ready_ms`), in session `session`.
  std::string MockRequest(const std::string& session, const std::string& message = "hi") {
    client_->StartSubmit(1, kSite, 1, 1, session, message, "en");
    const Outcome o = Await(*client_, 1);
    EXPECT_EQ(o.kind, OutcomeKind::kAccepted) << o.error;
    return o.request_id;
  }

  // A completed job in the database for a completed mock request; returns the job id.
  long long CompletedJob(const std::string& session) {
    const std::string request_id = MockRequest(session);
    return QueryInt(db_,
                    "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, answer, "
                    "finished_at) VALUES ('" +
                        session + "', 'hi', 'completed', 1, '" + request_id +
                        "', 'echo: hi', now()) RETURNING id");
  }

  // Claims every due row of `kind`, sends each once, applies the decisions. Returns the rows claimed.
  size_t Round(DeliveryKind kind, UppzyClient* client = nullptr) {
    if (!client) client = client_.get();
    Exec(db_, "UPDATE uppzy.chat_feedback SET run_at = now() WHERE state = 'retrying'");
    Exec(db_, "UPDATE uppzy.session_closes SET run_at = now() WHERE state = 'retrying'");
    auto claimed = store_->DeliveriesClaim(kind, "w", 30000, 100);
    std::vector<DeliveryWrite> writes;
    for (const auto& d : claimed) {
      const uint64_t tag = 1000 + static_cast<uint64_t>(d.id);
      if (kind == DeliveryKind::kFeedback) {
        client->StartFeedback(tag, kSite, d.session_id, d.request_id, d.feedback);
      } else {
        client->StartSessionClose(tag, kSite, d.session_id);
      }
      const Outcome o = Await(*client, tag);
      const TimePoint now = Clock::now();
      writes.push_back(
          WriteDeliveryOutcome(d, DecideDelivery(DeliveryContext::Of(d), o, now, policy_, 0.5), now));
    }
    auto r = store_->DeliveriesApplyWrites("w", writes);
    EXPECT_TRUE(r.refused.empty());
    return claimed.size();
  }

  std::string Feedback(long long id, const std::string& columns) {
    return Query(db_, "SELECT concat_ws(' ', " + columns +
                          ") FROM uppzy.chat_feedback WHERE id = " + std::to_string(id));
  }

  std::unique_ptr<mock::MockServer> mock_;
  std::string db_;
  std::unique_ptr<DeliveryStore> store_;
  std::unique_ptr<UppzyClient> client_;
  Policy policy_;
};

TEST_F(DeliveryFlow, RatingOfACompletedJobIsDeliveredWithFeedbackSubmittedAt) {
  const long long job = CompletedJob("s-ok");
  const long long id = QueryInt(db_, "SELECT uppzy.rate_job(" + std::to_string(job) + ", 'good')");
  EXPECT_EQ(Round(DeliveryKind::kFeedback), 1u);
  EXPECT_EQ(Feedback(id,
                     "state, attempts, delivered_http_status, feedback_submitted_at IS NOT NULL, "
                     "abs(extract(epoch FROM feedback_submitted_at - now())) < 60"),
            "delivered 1 200 t t");
  auto stats = nlohmann::json::parse(mock_->StatsJson());
  EXPECT_EQ(stats["feedback_by_request"][Query(db_, "SELECT request_id FROM uppzy.chat_feedback")], 1);
}

TEST_F(DeliveryFlow, RateLimitedThenOkIsDeliveredOnAttemptTwo) {
  const long long job = CompletedJob("s-429 mock.feedback=429,ok");
  const long long id = QueryInt(db_, "SELECT uppzy.rate_job(" + std::to_string(job) + ", 'bad')");
  Round(DeliveryKind::kFeedback);
  EXPECT_EQ(Feedback(id, "state, attempts, error_kind, last_http_status"), "retrying 1 rate_limited 429");
  Round(DeliveryKind::kFeedback);
  EXPECT_EQ(Feedback(id, "state, attempts, jsonb_array_length(errors), feedback_submitted_at IS NOT NULL"),
            "delivered 2 1 t");
}

TEST_F(DeliveryFlow, BadRequestFailsAtOnce) {
  const long long job = CompletedJob("s-400 mock.feedback=400");
  const long long id = QueryInt(db_, "SELECT uppzy.rate_job(" + std::to_string(job) + ", 'good')");
  Round(DeliveryKind::kFeedback);
  EXPECT_EQ(Feedback(id, "state, attempts, error_kind, last_http_status"), "failed 1 bad_request 400");
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.delivery_failures"), 1);
}

TEST_F(DeliveryFlow, UppzyRefusesARatingOfAnUnfinishedOrUnknownRequest) {
  // Given directly (no job_id), the SQL cannot check; the mock refuses like Uppzy: 409 / 404.
  const std::string processing = MockRequest("s-slow", "hi mock.ready=600000");
  Exec(db_, "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback) VALUES ('s-slow', '" +
                processing + "', 'good'), ('s-slow', 'req_unknown', 'bad')");
  Round(DeliveryKind::kFeedback);
  EXPECT_EQ(Query(db_,
                  "SELECT string_agg(concat_ws(' ', state, error_kind, last_http_status), ', ' ORDER BY id) "
                  "FROM uppzy.chat_feedback"),
            "failed bad_request 409, failed bad_request 404");
}

TEST_F(DeliveryFlow, ChangedRatingIsSentAgainAndKeepsTheFirstAcknowledgement) {
  const long long job = CompletedJob("s-again");
  const std::string j = std::to_string(job);
  const long long id = QueryInt(db_, "SELECT uppzy.rate_job(" + j + ", 'good')");
  Round(DeliveryKind::kFeedback);
  const std::string first = Feedback(id, "feedback_submitted_at");
  EXPECT_EQ(QueryInt(db_, "SELECT uppzy.rate_job(" + j + ", 'good')"), id);
  EXPECT_EQ(Round(DeliveryKind::kFeedback), 0u) << "the same rating again is not sent again";
  EXPECT_EQ(QueryInt(db_, "SELECT uppzy.rate_job(" + j + ", 'bad')"), id);
  EXPECT_EQ(Round(DeliveryKind::kFeedback), 1u);
  EXPECT_EQ(Feedback(id, "state, feedback, attempts"), "delivered bad 1");
  EXPECT_EQ(Feedback(id, "feedback_submitted_at"), first)
      << "Uppzy sends no new timestamp for a second rating";
  auto stats = nlohmann::json::parse(mock_->StatsJson());
  EXPECT_EQ(stats["feedback_by_request"][Query(db_, "SELECT request_id FROM uppzy.chat_feedback")], 2);
}

TEST_F(DeliveryFlow, SessionCloseIsDeliveredAndARepeatedCloseIsFine) {
  Exec(db_, "INSERT INTO uppzy.session_closes (session_id) VALUES ('conv-9')");
  EXPECT_EQ(Round(DeliveryKind::kSessionClose), 1u);
  Exec(db_, "SELECT uppzy.close_session('conv-9')");
  EXPECT_EQ(Round(DeliveryKind::kSessionClose), 1u);
  EXPECT_EQ(
      Query(db_,
            "SELECT string_agg(concat_ws(' ', state, attempts, delivered_http_status), ', ' ORDER BY id) "
            "FROM uppzy.session_closes"),
      "delivered 1 200, delivered 1 200");
  EXPECT_EQ(nlohmann::json::parse(mock_->StatsJson())["closes_by_session"]["conv-9"], 2);

  Exec(db_, "INSERT INTO uppzy.session_closes (session_id) VALUES ('conv-5 mock.close=500,ok')");
  Round(DeliveryKind::kSessionClose);
  Round(DeliveryKind::kSessionClose);
  EXPECT_EQ(Query(db_,
                  "SELECT concat_ws(' ', state, attempts, errors->0->>'kind') FROM uppzy.session_closes "
                  "WHERE session_id LIKE 'conv-5%'"),
            "delivered 2 server_error");
}

TEST_F(DeliveryFlow, UnauthorizedHandsTheRowBackUncharged) {
  Exec(db_, "INSERT INTO uppzy.session_closes (session_id) VALUES ('conv-1')");
  auto wrong_key = MakeClient("wrong");
  Round(DeliveryKind::kSessionClose, wrong_key.get());
  EXPECT_EQ(Query(db_,
                  "SELECT concat_ws(' ', state, attempts, error_kind, locked_by IS NULL) FROM "
                  "uppzy.session_closes"),
            "queued 0 unauthorized t");
  Round(DeliveryKind::kSessionClose);
  EXPECT_EQ(Query(db_, "SELECT concat_ws(' ', state, attempts) FROM uppzy.session_closes"), "delivered 1");
}

}  // namespace
}  // namespace uppzy
