// Answer-time observations (migration 0009) against a real PostgreSQL: what the worker's writes store,
// what the constraint refuses, and what adaptive polling reads back.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "support/support.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using std::chrono::milliseconds;
using test::Exec;
using test::Query;

// Claims one job, accepts it and ends it with `end` (built from the held row), all as worker "w".
void RunOne(Store& store, const std::function<JobWrite(const HeldJob&)>& end) {
  HeldJob h = HeldJob::Of(store.JobsClaimQueued("w", 30000, 1).at(0));
  const auto now = Clock::now();
  JobWrite accepted = WriteAccepted(h, "req-" + std::to_string(h.id), now, now + std::chrono::seconds(45));
  h.row_state = JobState::kPolling;
  h.request_id = "req-" + std::to_string(h.id);
  ASSERT_EQ(store.JobsApplyWrites("w", {accepted, end(h)}).applied.size(), 1u);
}

TEST(AnswerTimes, CompletedAndTimedOutJobsKeepBothEndsAndAreReadBackNewestFirst) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's', 'm' FROM generate_series(1, 3)");
  Store store(db);
  const TimePoint t0 = Clock::now();
  // Seen at the third poll: in progress at 7.5 s, ready at 10 s.
  RunOne(store, [&](const HeldJob& h) {
    JobWrite w = WriteCompleted(h, "a", "{}");
    SetAnswerTimes(w, t0, t0 + milliseconds(7500), t0 + milliseconds(10000));
    return w;
  });
  // The polls ran out at 45 s: the answer came later, if ever.
  RunOne(store, [&](const HeldJob& h) {
    Transition t;
    t.action = Action::kFail;
    t.error_kind = ErrorKind::kPollTimeout;
    t.message = "no final status within the poll timeout";
    JobWrite w = WriteFinishedAttempt(h, t, Clock::now());
    SetAnswerTimes(w, t0, t0 + milliseconds(45000), std::nullopt);
    return w;
  });
  // A nonsense interval (the clock stepped back) is not stored at all.
  RunOne(store, [&](const HeldJob& h) {
    JobWrite w = WriteCompleted(h, "b", "{}");
    SetAnswerTimes(w, t0, t0 + milliseconds(5000), t0 + milliseconds(4000));
    return w;
  });
  EXPECT_EQ(Query(db,
                  "SELECT string_agg(concat_ws(' ', state, coalesce(answer_ready_after_ms::text, '-'), "
                  "coalesce(answer_seen_after_ms::text, '-')), ', ' ORDER BY id) FROM uppzy.chat_jobs"),
            "completed 7500 10000, failed 45000 -, completed - -");

  OpsStore ops(db);
  const auto rows = ops.AnswerTimesRecent(std::chrono::minutes(10), 100);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].ready_after_ms, 45000);  // newest first
  EXPECT_FALSE(rows[0].seen_after_ms.has_value());
  EXPECT_EQ(rows[1].ready_after_ms, 7500);
  EXPECT_EQ(rows[1].seen_after_ms, 10000);
  EXPECT_EQ(ops.AnswerTimesRecent(std::chrono::minutes(10), 1).size(), 1u);
  // Finished longer ago than the window: not read.
  Exec(db, "UPDATE uppzy.chat_jobs SET finished_at = now() - interval '1 hour'");
  EXPECT_TRUE(ops.AnswerTimesRecent(std::chrono::minutes(10), 100).empty());
}

TEST(AnswerTimes, TheConstraintRefusesIntervalsTheEstimateWouldMisread) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')");
  for (const char* set : {"answer_ready_after_ms = -1", "answer_seen_after_ms = 5",
                          "answer_ready_after_ms = 10, answer_seen_after_ms = 10"}) {
    try {
      Exec(db, std::string("UPDATE uppzy.chat_jobs SET ") + set);
      ADD_FAILURE() << set << " was accepted";
    } catch (const pqxx::check_violation& e) {
      EXPECT_NE(std::string(e.what()).find("chat_jobs_answer_times_valid"), std::string::npos) << e.what();
    }
  }
}

TEST(AnswerTimes, ASitesOwnPollModeAndDelayAreCheckedByNamedConstraints) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.sites (site_id, poll_mode, poll_target_delay_ms) VALUES ('a', 'adaptive', 2000)");
  for (const auto& [set, constraint] : std::vector<std::pair<std::string, std::string>>{
           {"poll_mode = 'smart'", "sites_poll_mode_valid"},
           {"poll_target_delay_ms = 50", "sites_poll_target_delay_range"}}) {
    try {
      Exec(db, "UPDATE uppzy.sites SET " + set);
      ADD_FAILURE() << set << " was accepted";
    } catch (const pqxx::check_violation& e) {
      EXPECT_NE(std::string(e.what()).find(constraint), std::string::npos) << e.what();
    }
  }
  OpsStore ops(db);
  const auto sites = ops.SitesPolling();
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].poll_mode, "adaptive");
  EXPECT_EQ(sites[0].poll_target_delay_ms, 2000);
  EXPECT_FALSE(sites[0].poll_interval_ms.has_value());
}

}  // namespace
}  // namespace uppzy
