// The request budget every worker shares (issue 10, section 2), end to end with real worker processes,
// a real PostgreSQL and the mock enforcing the vendor's limit: two workers together stay within a
// site's limit without a single 429 while a site without a limit goes at full speed; a worker killed
// while it holds tokens leaves no call unaccounted; a 429 blocks the site for every worker and lowers
// its rate where operators can see it; max_in_flight holds across workers.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>
#include <thread>

#include "support/temp_dir.h"
#include "support/wait_for.h"
#include "support/worker_fixture.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Exec;
using test::Query;
using test::QueryInt;
using test::WaitFor;

class BudgetE2E : public test::WorkerFixture {
 protected:
  // The mock allows site "lim" 20 requests/s (burst 20); uppzy.sites gives it 16/s, burst 8: an
  // operator sets the budget a little under the vendor's limit, as the README says.
  void StartMockAndSites(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--ready-after-ms", "100",        "--site",
                                     "lim=key-lim-1111", "--site",     "free=key-free-2222",
                                     "--rate-limit",     "lim=20/s,20"};
    args.insert(args.end(), extra.begin(), extra.end());
    mock_ = std::make_unique<test::MockProcess>(args, key_);
    test::TempDir::Write(dir_ / "lim", "key-lim-1111\n");
    test::TempDir::Write(dir_ / "free", "key-free-2222\n");
    Exec(db_,
         "INSERT INTO uppzy.sites (site_id, requests_per_s, burst) VALUES ('lim', 16, 8), ('free', NULL, "
         "NULL)");
  }

  std::unique_ptr<test::Process> Start(const std::string& id, std::map<std::string, std::string> extra = {}) {
    std::map<std::string, std::string> env = {{"UPPZY_API_KEY", ""},
                                              {"UPPZY_SITE_ID", "lim"},
                                              {"UPPZY_API_KEYS_DIR", dir_.path().string()},
                                              {"UPPZY_WORKER_ID", id},
                                              {"UPPZY_POLL_INTERVAL_MS", "300"},
                                              {"UPPZY_POLL_MODE", "fixed"},
                                              {"UPPZY_LEASE_MS", "3000"},
                                              {"UPPZY_RESCUE_INTERVAL_MS", "300"}};
    for (auto& [k, v] : extra) env[k] = v;
    return StartWorker(env);
  }

  // `max_attempts` 0: the column's default.
  void EnqueueFor(const std::string& site, int n, int max_attempts = 0) {
    const std::string col = max_attempts > 0 ? ", max_attempts" : "";
    const std::string val = max_attempts > 0 ? ", " + std::to_string(max_attempts) : "";
    Exec(db_, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id" + col + ") SELECT 's', 'q " + site +
                  " ' || g, '" + site + "'" + val + " FROM generate_series(1, " + std::to_string(n) + ") g");
  }
  long long Count(const std::string& where) {
    return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE " + where);
  }

  test::TempDir dir_{"uppzy-e2e-budget"};
};

TEST_F(BudgetE2E, TwoWorkersShareASitesLimitWithoutA429WhileASiteWithoutOneGoesAtFullSpeed) {
  StartMockAndSites();
  auto a = Start("budget-a");
  auto b = Start("budget-b");
  ASSERT_TRUE(WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.workers") == 2; }, 20s));
  EnqueueFor("lim", 60);  // about 120 calls: 7 s or more at 16/s
  EnqueueFor("free", 60);
  ASSERT_TRUE(WaitFor([&] { return Count("site_id = 'free' AND state = 'completed'") == 60; }, 20s))
      << a->Log();
  EXPECT_LT(Count("site_id = 'lim' AND state = 'completed'"), 60)
      << "the free site did not wait behind the limited one";
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") == 120; }, 60s)) << a->Log() << b->Log();

  const auto stats = mock_->Stats();
  const auto& lim = stats["sites"]["lim"];
  EXPECT_EQ(lim["rate_limited"], 0) << "the workers kept to the shared budget: " << lim.dump();
  EXPECT_LE(lim["max_per_second"].get<int>(), 16 * 1.1 + 8) << lim.dump();
  EXPECT_GE(lim["requests"].get<int>(), 120);
  // Every call to the limited site took a token of its bucket; both workers took some.
  EXPECT_GE(QueryInt(db_, "SELECT tokens_granted FROM uppzy.site_limits WHERE site_id = 'lim'"),
            lim["requests"].get<long long>());
  EXPECT_EQ(stats["sites"]["free"]["rate_limited"], 0);
  EXPECT_EQ(stats["duplicate_submissions"], 0);
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.site_budgets WHERE site_id = 'free'"), 0)
      << "a site without a limit costs no budget row";
  // Operators see each site's budget in `sites list --json` (and on the dashboard's Sites panel).
  const auto sites = test::RunWorkerCliJson(db_, {"sites", "list", "--json"});
  bool seen = false;
  for (const auto& site : sites) {
    if (site.value("site_id", json()) != "lim") continue;
    seen = true;
    EXPECT_EQ(site["requests_per_s"], 16.0) << site.dump();
    EXPECT_EQ(site["effective_rate_per_s"], 16.0) << site.dump();
    EXPECT_EQ(site["rate_limited"], 0) << site.dump();
    EXPECT_GE(site["tokens_granted"].get<long long>(), 120) << site.dump();
  }
  EXPECT_TRUE(seen) << sites.dump();
}

TEST_F(BudgetE2E, AWorkerKilledHoldingTokensLeavesNoCallUnaccountedAndTheOtherFinishes) {
  StartMockAndSites();
  auto a = Start("budget-a");
  auto b = Start("budget-b");
  EnqueueFor("lim", 60);
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") >= 10; }, 20s)) << a->Log();
  a->Signal(SIGKILL);
  a->Wait(5s);
  ASSERT_TRUE(WaitFor([&] { return Count("finished_at IS NULL") == 0; }, 60s)) << b->Log();
  EXPECT_EQ(Count("state = 'completed'"), 60) << b->Log();
  const auto stats = mock_->Stats();
  const auto& lim = stats["sites"]["lim"];
  EXPECT_EQ(lim["rate_limited"], 0) << lim.dump();
  EXPECT_LE(lim["max_per_second"].get<int>(), 16 * 1.1 + 8) << lim.dump();
  // The tokens the killed worker held left the bucket with it: the fleet never spent more than it was
  // granted, so the kill over-spent nothing (at most its last grant would have been lost, not added).
  EXPECT_GE(QueryInt(db_, "SELECT tokens_granted FROM uppzy.site_limits WHERE site_id = 'lim'"),
            lim["requests"].get<long long>());
}

TEST_F(BudgetE2E, A429BlocksTheSiteForEveryWorkerAndLowersItsRateVisibly) {
  // The vendor's real limit is lower than the operator thought: 4/s against a configured 16/s.
  mock_ = std::make_unique<test::MockProcess>(
      std::vector<std::string>{"--ready-after-ms", "100", "--site", "lim=key-lim-1111", "--rate-limit",
                               "lim=4/s,4"},
      key_);
  test::TempDir::Write(dir_ / "lim", "key-lim-1111\n");
  Exec(db_, "INSERT INTO uppzy.sites (site_id, requests_per_s, burst) VALUES ('lim', 16, 8)");
  auto a = Start("budget-a");
  auto b = Start("budget-b");
  // Each 429'd submission costs an attempt (the row's own back-off): room for them, so that what is
  // measured is the site's learned rate, not jobs running out of attempts on a slow machine.
  EnqueueFor("lim", 40, 20);
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") == 40; }, 180s)) << a->Log() << b->Log();
  const auto stats = mock_->Stats();
  const auto& lim = stats["sites"]["lim"];
  EXPECT_GT(lim["rate_limited"].get<int>(), 0) << "the test needs the vendor to say 429";
  EXPECT_LT(lim["rate_limited"].get<double>(), 0.25 * lim["requests"].get<double>())
      << "the workers learned: " << lim.dump();
  EXPECT_GE(QueryInt(db_, "SELECT rate_limited FROM uppzy.site_limits WHERE site_id = 'lim'"), 1);
  EXPECT_EQ(Query(db_, "SELECT rate_factor < 1 FROM uppzy.site_limits WHERE site_id = 'lim'"), "t")
      << "the effective rate went down and is visible in uppzy.site_limits";
  const std::string logs = a->Log() + b->Log();
  EXPECT_NE(logs.find("site_rate_limited"), std::string::npos);
  EXPECT_EQ(Count("state = 'failed'"), 0);
}

TEST_F(BudgetE2E, AnOperatorsPauseStopsASitesClaimsWithinASecondAndResumeRestartsThem) {
  StartMockAndSites();
  auto a = Start("budget-a");
  auto b = Start("budget-b");
  EnqueueFor("lim", 150);  // draining at 16 requests/s takes about 19 s
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") >= 10; }, 20s)) << a->Log();
  Exec(db_, "UPDATE uppzy.sites SET paused_at = now(), paused_reason = 'plan change' WHERE site_id = 'lim'");
  std::this_thread::sleep_for(1s);
  const long long claimed = Count("attempts > 0");
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(Count("attempts > 0"), claimed) << "no claim for the paused site after a second";
  EXPECT_GT(Count("state = 'queued'"), 0);
  Exec(db_, "UPDATE uppzy.sites SET paused_at = NULL, paused_reason = NULL WHERE site_id = 'lim'");
  ASSERT_TRUE(WaitFor([&] { return Count("attempts > 0") > claimed; }, 2s)) << "resumed at once";
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") == 150; }, 60s)) << a->Log() << b->Log();
  const auto lim = mock_->Stats()["sites"]["lim"];
  EXPECT_EQ(lim["rate_limited"], 0) << lim.dump();
}

TEST_F(BudgetE2E, MaxInFlightHoldsAcrossWorkers) {
  mock_ = std::make_unique<test::MockProcess>(
      std::vector<std::string>{"--ready-after-ms", "1500", "--site", "lim=key-lim-1111"}, key_);
  test::TempDir::Write(dir_ / "lim", "key-lim-1111\n");
  Exec(db_, "INSERT INTO uppzy.sites (site_id, max_in_flight) VALUES ('lim', 5)");
  auto a = Start("budget-a");
  auto b = Start("budget-b");
  EnqueueFor("lim", 30);
  long long most = 0;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (Count("state = 'completed'") < 30 && std::chrono::steady_clock::now() < until) {
    most = std::max(most, Count("state IN ('submitting', 'polling')"));
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(Count("state = 'completed'"), 30) << a->Log();
  EXPECT_LE(most, 5) << "never more than max_in_flight submitted and unfinished, across both workers";
  EXPECT_GE(most, 3) << "and the cap is used";
}

}  // namespace
}  // namespace uppzy
