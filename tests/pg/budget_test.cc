// The shared request budget in PostgreSQL (migrations/0010_site_budgets.sql, Store::BudgetsGrant and
// BudgetsBlock): grants are small and never exceed the bucket whichever worker asks, the bucket refills
// on the database clock, max_in_flight holds across workers, a 429 blocks the site for everyone and
// cuts its rate once (by 30%), a site with no limit learns one from a 429, and the rate climbs back.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "support/support.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using test::ErrorOf;
using test::Exec;
using test::Query;
using test::QueryInt;

std::map<std::string, BudgetGrant> Grant(Store& store, std::vector<BudgetWant> wants,
                                         const std::string& default_site = "dflt") {
  std::map<std::string, BudgetGrant> out;
  for (auto& g : store.BudgetsGrant(wants, default_site)) out[g.site_id] = g;
  return out;
}

double Number(const std::string& db, const std::string& sql) { return std::stod(Query(db, sql)); }

class Budget : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    Exec(db_,
         "INSERT INTO uppzy.sites (site_id, requests_per_s, burst, max_in_flight) VALUES "
         "('limited', 50, 50, NULL), ('capped', NULL, NULL, 3), ('free', NULL, NULL, NULL)");
  }
  std::string db_;
};

TEST_F(Budget, ASiteWithoutALimitIsNotBudgetedAndCostsNoRow) {
  Store store(db_);
  auto g = Grant(store, {{"free", 100, 10}, {"dflt", 100, 10}});
  ASSERT_EQ(g.size(), 2u);
  EXPECT_FALSE(g["free"].budgeted);
  EXPECT_FALSE(g["dflt"].budgeted) << "the default site needs no row in uppzy.sites";
  EXPECT_EQ(g["free"].slots, -1);
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.site_budgets"), 0);
}

TEST_F(Budget, GrantsAreATenthOfASecondAndTheFleetNeverTakesMoreThanTheBucket) {
  Store a(db_), b(db_);
  auto first = Grant(a, {{"limited", 1000, 0}});
  EXPECT_TRUE(first["limited"].budgeted);
  EXPECT_EQ(first["limited"].tokens, 5) << "100 ms of 50 requests/s";
  EXPECT_DOUBLE_EQ(first["limited"].rate_per_s, 50);
  // Two workers asking as fast as they can for a second: never more than the burst plus the refill.
  const auto start = std::chrono::steady_clock::now();
  long long taken = first["limited"].tokens;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(1)) {
    taken += Grant(a, {{"limited", 1000, 0}})["limited"].tokens;
    taken += Grant(b, {{"limited", 1000, 0}})["limited"].tokens;
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LE(taken, 50 + 50 * elapsed + 1) << "burst 50 + 50/s for " << elapsed << " s";
  EXPECT_GE(taken, 50) << "the full bucket is there to take";
  EXPECT_EQ(QueryInt(db_, "SELECT granted FROM uppzy.site_budgets WHERE site_id = 'limited'"), taken);
}

TEST_F(Budget, TheBucketRefillsOnTheDatabaseClockUpToTheBurst) {
  Store store(db_);
  Grant(store, {{"limited", 1, 0}});
  // As if the last grant were 10 s ago, with the bucket empty: it holds 50 (the burst), not 500.
  Exec(db_, "UPDATE uppzy.site_budgets SET tokens = 0, refilled_at = now() - interval '10 seconds'");
  EXPECT_EQ(Grant(store, {{"limited", 1000, 0}})["limited"].tokens, 5);
  EXPECT_NEAR(Number(db_, "SELECT tokens FROM uppzy.site_budgets"), 45, 1);
  // As if it were 40 ms ago: 2 tokens came back, so 2 are granted, not 5.
  Exec(db_, "UPDATE uppzy.site_budgets SET tokens = 0, refilled_at = now() - interval '40 milliseconds'");
  EXPECT_EQ(Grant(store, {{"limited", 1000, 0}})["limited"].tokens, 2);
}

TEST_F(Budget, CallsAlreadyWaitingComeBeforeNewSubmissionsAcrossWorkers) {
  Store a(db_), b(db_);
  Grant(a, {{"limited", 1, 0}});
  // Three tokens left: worker a has 10 polls waiting and gets the three; worker b, which only wants
  // to start new submissions, gets none while a's polls are short.
  Exec(db_, "UPDATE uppzy.site_budgets SET tokens = 3, refilled_at = now()");
  EXPECT_EQ(Grant(a, {{"limited", 10, 0}})["limited"].tokens, 3);
  Exec(db_, "UPDATE uppzy.site_budgets SET tokens = 10, refilled_at = now()");
  EXPECT_EQ(Grant(b, {{"limited", 5, 5}})["limited"].tokens, 0) << "a's polls went short a moment ago";
  // 200 ms later (as if), with no poll short, b's new submissions get their tokens.
  Exec(db_, "UPDATE uppzy.site_budgets SET polls_short_until = now() - interval '1 millisecond'");
  EXPECT_EQ(Grant(b, {{"limited", 5, 5}})["limited"].tokens, 5);
  // A worker's own polls are served before its submissions: 2 waiting + 10 new, 5 tokens in a grant.
  Exec(db_, "UPDATE uppzy.site_budgets SET tokens = 50, refilled_at = now()");
  EXPECT_EQ(Grant(a, {{"limited", 12, 10}})["limited"].tokens, 5);
}

TEST_F(Budget, MaxInFlightHoldsAcrossWorkers) {
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (session_id, message, site_id, state, attempts, request_id, "
       "submitted_at, poll_deadline, locked_by, lease_expires_at) VALUES ('s', 'm', 'capped', 'polling', 1, "
       "'r1', now(), now() + interval '1 minute', 'w0', now() + interval '1 minute')");
  Store a(db_), b(db_);
  auto ga = Grant(a, {{"capped", 10, 10}});
  EXPECT_TRUE(ga["capped"].budgeted);
  EXPECT_EQ(ga["capped"].slots, 2) << "3 allowed, 1 in flight";
  EXPECT_EQ(ga["capped"].tokens, 10) << "no rate limit: every call may go";
  EXPECT_EQ(Grant(b, {{"capped", 10, 10}})["capped"].slots, 0)
      << "worker a's two slots are reserved until it has claimed them";
  // A second later the reservation has lapsed; a's claims (if any) count as rows in flight instead.
  Exec(db_, "UPDATE uppzy.site_budgets SET reserved_until = now() - interval '1 millisecond'");
  EXPECT_EQ(Grant(b, {{"capped", 10, 10}})["capped"].slots, 2);
  EXPECT_EQ(Grant(a, {{"capped", 10, 0}})["capped"].slots, 0) << "asking for none reserves none";
}

TEST_F(Budget, A429BlocksTheSiteForEveryWorkerAndCutsItsRateOncePerSecond) {
  Store a(db_), b(db_);
  Grant(a, {{"limited", 1, 0}});
  a.BudgetsBlock("limited", 2000, 40);
  auto g = Grant(b, {{"limited", 1000, 0}})["limited"];
  EXPECT_EQ(g.tokens, 0) << "worker b is blocked too";
  const long long now_ms = QueryInt(db_, "SELECT (extract(epoch FROM now()) * 1000)::bigint");
  EXPECT_NEAR(static_cast<double>(g.blocked_until_ms - now_ms), 2000, 300);
  EXPECT_NEAR(g.rate_per_s, 35, 1e-9) << "50 x 0.7";
  // The same burst of 429s seen by another worker: blocked again, but the rate is cut only once.
  b.BudgetsBlock("limited", 1000, 40);
  EXPECT_EQ(Query(db_, "SELECT effective_rate_per_s FROM uppzy.site_limits WHERE site_id = 'limited'"),
            "35.000");
  EXPECT_EQ(QueryInt(db_, "SELECT rate_limited FROM uppzy.site_limits WHERE site_id = 'limited'"), 2);
  EXPECT_EQ(Query(db_, "SELECT blocked_until IS NOT NULL FROM uppzy.site_limits WHERE site_id = 'limited'"),
            "t");
  // Once the block is over the rate climbs back by 0.05 of the limit a second, never above it.
  Exec(db_,
       "UPDATE uppzy.site_budgets SET blocked_until = now() - interval '2 seconds', "
       "refilled_at = now() - interval '2 seconds', last_429_at = now() - interval '3 seconds'");
  EXPECT_NEAR(Grant(a, {{"limited", 1, 0}})["limited"].rate_per_s, 35, 0.01) << "the rate before the climb";
  EXPECT_NEAR(Number(db_, "SELECT rate_factor FROM uppzy.site_budgets"), 0.8, 0.01);
  Exec(db_, "UPDATE uppzy.site_budgets SET refilled_at = now() - interval '100 seconds'");
  Grant(a, {{"limited", 1, 0}});
  EXPECT_DOUBLE_EQ(Number(db_, "SELECT rate_factor FROM uppzy.site_budgets"), 1.0);
  EXPECT_EQ(Query(db_, "SELECT blocked_until IS NULL FROM uppzy.site_limits WHERE site_id = 'limited'"), "t");
}

TEST_F(Budget, ASiteWithoutALimitLearnsOneFromA429AndForgetsItAMinuteAfterRecovering) {
  Store store(db_);
  EXPECT_FALSE(Grant(store, {{"dflt", 1, 0}})["dflt"].budgeted);
  store.BudgetsBlock("dflt", 500, 40);  // the default site, which has no row in uppzy.sites
  auto g = Grant(store, {{"dflt", 1, 0}})["dflt"];
  EXPECT_TRUE(g.budgeted) << "learned: 70% of what the fleet sent";
  EXPECT_NEAR(g.rate_per_s, 28, 1e-9);
  EXPECT_EQ(Query(db_, "SELECT effective_rate_per_s FROM uppzy.site_limits WHERE site_id = 'dflt'"),
            "28.000");
  // Recovered to the learned rate and no 429 for a minute: the site has no limit again.
  Exec(db_,
       "UPDATE uppzy.site_budgets SET blocked_until = now() - interval '2 minutes', "
       "refilled_at = now() - interval '100 seconds', last_429_at = now() - interval '2 minutes'");
  Grant(store, {{"dflt", 1, 0}});
  EXPECT_FALSE(Grant(store, {{"dflt", 1, 0}})["dflt"].budgeted);
}

TEST_F(Budget, BadBudgetValuesAreRefusedByNamedConstraints) {
  Store store(db_);
  Grant(store, {{"limited", 1, 0}});
  for (const auto& [set, constraint] : std::vector<std::pair<std::string, std::string>>{
           {"rate_factor = 0", "site_budgets_rate_factor_range"},
           {"rate_factor = 2", "site_budgets_rate_factor_range"},
           {"tokens = -1", "site_budgets_tokens_finite"},
           {"tokens = 'Infinity'", "site_budgets_tokens_finite"},
           {"learned_rate = 0", "site_budgets_learned_rate_positive"},
           {"reserved = -1", "site_budgets_reserved_positive"},
           {"site_id = '..'", "site_budgets_site_id_valid"}}) {
    EXPECT_NE(ErrorOf(db_, "UPDATE uppzy.site_budgets SET " + set).find(constraint), std::string::npos)
        << set;
  }
  EXPECT_NE(ErrorOf(db_, "UPDATE uppzy.sites SET requests_per_s = -1 WHERE site_id = 'limited'")
                .find("sites_requests_per_s_positive"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf(db_, "UPDATE uppzy.sites SET burst = 0 WHERE site_id = 'limited'").find("sites_burst_positive"),
      std::string::npos);
}

}  // namespace
}  // namespace uppzy
