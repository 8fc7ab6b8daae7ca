// Many sites in one deployment, end to end (issue 10): one worker with a keys directory serves each
// site with its own key, claims round the sites so one site's backlog does not hold up another's
// question, leaves a site it holds no key for queued (and says so), and honours an operator's pause.
#include <gtest/gtest.h>

#include <string>

#include "support/temp_dir.h"
#include "support/wait_for.h"
#include "support/worker_fixture.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Exec;
using test::Query;
using test::QueryInt;
using test::WaitFor;

class SitesE2E : public test::WorkerFixture {
 protected:
  void SetUp() override {
    test::WorkerFixture::SetUp();
    // Each site its own key; a request with another site's key gets 401 (the mock checks).
    mock_ = std::make_unique<test::MockProcess>(
        std::vector<std::string>{"--ready-after-ms", "100", "--site", "site-a=key-aaaa-1111", "--site",
                                 "site-b=key-bbbb-2222", "--site", "site-c=key-cccc-3333"},
        key_);
    test::TempDir::Write(dir_ / "site-a", "key-aaaa-1111\n");
    test::TempDir::Write(dir_ / "site-b", "key-bbbb-2222\n");
    Exec(db_, "INSERT INTO uppzy.sites (site_id) VALUES ('site-a'), ('site-b'), ('site-c')");
  }

  std::unique_ptr<test::Process> Start() {
    return StartWorker({{"UPPZY_API_KEY", ""},
                        {"UPPZY_SITE_ID", "site-a"},
                        {"UPPZY_API_KEYS_DIR", dir_.path().string()},
                        {"UPPZY_MAX_IN_FLIGHT", "20"},
                        {"UPPZY_CLAIM_BATCH", "20"}});
  }

  void EnqueueFor(const std::string& site, int n) {
    Exec(db_, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) SELECT 's', 'q " + site +
                  " ' || g, " + (site.empty() ? std::string("NULL") : "'" + site + "'") +
                  " FROM generate_series(1, " + std::to_string(n) + ") g");
  }

  long long Count(const std::string& where) {
    return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE " + where);
  }

  test::TempDir dir_{"uppzy-e2e-sites"};
};

TEST_F(SitesE2E, EachSiteWithItsOwnKeyAndABacklogDoesNotHoldUpAnotherSite) {
  EnqueueFor("site-a", 300);
  EnqueueFor("site-b", 3);
  EnqueueFor("", 5);  // no site: the worker's default (site-a)
  auto worker = Start();
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") == 308; }, 60s)) << worker->Log();
  EXPECT_EQ(Count("error_kind IS NOT NULL"), 0) << "every request carried its own site's key";
  // site-b's three jobs were not queued behind site-a's 300: they finished among the first ones.
  const long long b_last = QueryInt(db_, "SELECT max(id) FROM uppzy.chat_jobs WHERE site_id = 'site-b'");
  const long long a_done_before_b = Count(
      "site_id = 'site-a' AND finished_at < (SELECT max(finished_at) FROM "
      "uppzy.chat_jobs WHERE site_id = 'site-b')");
  EXPECT_LT(a_done_before_b, 100) << "site-b's last job (id " << b_last << ") waited behind site-a's backlog";
  const auto stats = mock_->Stats();
  EXPECT_EQ(stats["submits"], 308) << stats.dump();
  EXPECT_EQ(stats["duplicate_submissions"], 0) << stats.dump();
  EXPECT_GE(stats["sites"]["site-b"]["requests"], 6) << "3 submits and their polls, on site-b's own path";
  EXPECT_EQ(stats["sites_total"]["unauthorized"], 0) << "no request carried another site's key";
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.incidents"), 0);
}

TEST_F(SitesE2E, ASiteWithoutAKeyStaysQueuedAndIsReportedAndAPauseStopsOnlyItsSite) {
  EnqueueFor("site-c", 4);  // no key for site-c in the directory
  auto worker = Start();
  EnqueueFor("site-a", 5);
  ASSERT_TRUE(WaitFor([&] { return Count("site_id = 'site-a' AND state = 'completed'") == 5; }, 20s))
      << worker->Log();
  EXPECT_EQ(Count("site_id = 'site-c' AND state = 'queued'"), 4);
  EXPECT_EQ(Query(db_, "SELECT served FROM uppzy.site_queues WHERE site_id = 'site-c'"), "f");
  EXPECT_EQ(Query(db_, "SELECT queued FROM uppzy.site_queues WHERE site_id = 'site-c'"), "4");
  EXPECT_EQ(Query(db_, "SELECT served FROM uppzy.site_queues WHERE site_id = 'site-a'"), "t");
  EXPECT_EQ(Query(db_, "SELECT unserved_by_site->>'site-c' FROM uppzy.chat_job_health"), "4");

  // An operator pauses site-b: its jobs wait, site-a's go on; resuming lets them go within seconds.
  Exec(db_,
       "UPDATE uppzy.sites SET paused_at = now(), paused_reason = 'plan change' WHERE site_id = 'site-b'");
  EnqueueFor("site-b", 3);
  EnqueueFor("site-a", 3);
  ASSERT_TRUE(WaitFor([&] { return Count("site_id = 'site-a' AND state = 'completed'") == 8; }, 20s))
      << worker->Log();
  EXPECT_EQ(Count("site_id = 'site-b' AND state = 'queued'"), 3);
  Exec(db_, "UPDATE uppzy.sites SET paused_at = NULL, paused_reason = NULL WHERE site_id = 'site-b'");
  EXPECT_TRUE(WaitFor([&] { return Count("site_id = 'site-b' AND state = 'completed'") == 3; }, 5s))
      << worker->Log();
  EXPECT_EQ(Count("site_id = 'site-c' AND state = 'queued'"), 4);
}

TEST_F(SitesE2E, ARefusedKeyStopsOnlyItsSiteAndAFixedKeyResumesItWithoutARestart) {
  test::TempDir::Write(dir_ / "site-b", "key-bbbb-WRONG\n");  // revoked, say
  auto worker = Start();
  EnqueueFor("site-b", 3);
  ASSERT_TRUE(WaitFor([&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.incidents") == 1; }, 20s))
      << worker->Log();
  EXPECT_EQ(Query(db_, "SELECT site_id FROM uppzy.incidents"), "site-b");
  // site-a goes on at full speed while site-b is stopped.
  EnqueueFor("site-a", 20);
  ASSERT_TRUE(WaitFor([&] { return Count("site_id = 'site-a' AND state = 'completed'") == 20; }, 20s))
      << worker->Log();
  EXPECT_EQ(Count("site_id = 'site-b' AND state = 'completed'"), 0);
  EXPECT_EQ(Count("site_id = 'site-b' AND state IN ('queued', 'retrying') AND attempts = 0"), 3)
      << "handed back uncharged";
  EXPECT_NE(worker->Log().find("incident_opened"), std::string::npos) << worker->Log();

  // The operator deploys the right key: the worker sees the file change and site-b resumes, no restart.
  test::TempDir::Write(dir_ / "site-b", "key-bbbb-2222\n");
  EXPECT_TRUE(WaitFor([&] { return Count("site_id = 'site-b' AND state = 'completed'") == 3; }, 10s))
      << worker->Log();
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL"), 1)
      << "the incident of the revoked key stays open for the operator to close";
}

TEST_F(SitesE2E, ASitesOwnPollIntervalAndTimeoutOverrideTheWorkers) {
  // site-b polls every 400 ms and gives up after 3 s; site-a keeps the worker's 50 ms and 45 s.
  Exec(db_, "UPDATE uppzy.sites SET poll_interval_ms = 400, poll_timeout_ms = 3000 WHERE site_id = 'site-b'");
  auto worker = Start();
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) VALUES ('s', 'a slow mock.ready=1000', "
       "'site-a'), ('s', 'b slow mock.ready=1000', 'site-b'), ('s', 'b never mock.ready=60000', 'site-b')");
  ASSERT_TRUE(WaitFor([&] { return Count("state = 'completed'") == 2; }, 20s)) << worker->Log();
  const long long a_polls = QueryInt(db_, "SELECT polls FROM uppzy.chat_jobs WHERE message LIKE 'a slow%'");
  const long long b_polls = QueryInt(db_, "SELECT polls FROM uppzy.chat_jobs WHERE message LIKE 'b slow%'");
  EXPECT_GE(a_polls, 8) << "every 50 ms for an answer of 1 s";
  EXPECT_LE(b_polls, 4) << "every 400 ms for an answer of 1 s";
  // site-b's own 3 s timeout, not the worker's 45 s.
  ASSERT_TRUE(
      WaitFor([&] { return Count("message LIKE 'b never%' AND error_kind = 'poll_timeout'") == 1; }, 20s))
      << worker->Log();
}

}  // namespace
}  // namespace uppzy
