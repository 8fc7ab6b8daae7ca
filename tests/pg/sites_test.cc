// Many Uppzy sites in one database (migrations/0008_sites.sql): bad site settings are refused by their
// named constraints, work for an unknown site is refused at INSERT, a claim takes each site's share (one
// site's backlog never starves another), never takes a site outside its scope or a paused one, reads
// the claim indexes, and a single-site database keeps working after the migration.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "store/queries.h"
#include "support/support.h"
#include "uppzy/delivery_store.h"
#include "uppzy/store.h"

namespace uppzy {
namespace {

using test::ErrorOf;
using test::Exec;
using test::Query;
using test::QueryInt;

// Inserts `n` queued jobs for `site` ("": the default site, as an app before 0008 inserts them).
void Enqueue(const std::string& db, const std::string& site, int n) {
  const std::string rows = " FROM generate_series(1, " + std::to_string(n) + ") g";
  if (site.empty()) {
    Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT 's' || g, 'm'" + rows);
  } else {
    Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) SELECT 's' || g, 'm', '" + site +
                 "'" + rows);
  }
}

ClaimScope Scope(std::string default_site, std::vector<SiteShare> shares) {
  ClaimScope s;
  s.default_site = std::move(default_site);
  s.shares = std::move(shares);
  return s;
}

std::map<std::string, int> CountBySite(const std::vector<ClaimedJob>& jobs) {
  std::map<std::string, int> n;
  for (const auto& j : jobs) ++n[j.site_id];
  return n;
}

struct BadSite {
  const char* values;  // appended to INSERT INTO uppzy.sites
  const char* constraint;
};

class SiteConstraints : public ::testing::TestWithParam<BadSite> {
 protected:
  static void SetUpTestSuite() { db_ = new std::string(test::MigratedDatabase()); }
  static std::string* db_;
};
std::string* SiteConstraints::db_ = nullptr;

TEST_P(SiteConstraints, RefusedWithTheNamedConstraint) {
  const std::string err = ErrorOf(*db_, std::string("INSERT INTO uppzy.sites ") + GetParam().values);
  ASSERT_FALSE(err.empty()) << "accepted: " << GetParam().values;
  EXPECT_NE(err.find(GetParam().constraint), std::string::npos) << err;
  EXPECT_EQ(QueryInt(*db_, "SELECT count(*) FROM uppzy.sites"), 0);
}

const BadSite kBadSites[] = {
    {"(site_id, requests_per_s) VALUES ('a', -1)", "sites_requests_per_s_positive"},
    {"(site_id, requests_per_s) VALUES ('a', 0)", "sites_requests_per_s_positive"},
    {"(site_id, requests_per_s) VALUES ('a', 'NaN')", "sites_requests_per_s_positive"},
    {"(site_id, requests_per_s) VALUES ('a', 'Infinity')", "sites_requests_per_s_positive"},
    {"(site_id, burst) VALUES ('a', 0)", "sites_burst_positive"},
    {"(site_id, max_in_flight) VALUES ('a', 0)", "sites_max_in_flight_positive"},
    {"(site_id, poll_interval_ms) VALUES ('a', 9)", "sites_poll_interval_range"},
    {"(site_id, poll_interval_ms) VALUES ('a', 600001)", "sites_poll_interval_range"},
    {"(site_id, poll_timeout_ms) VALUES ('a', 99)", "sites_poll_timeout_range"},
    {"(site_id, poll_timeout_ms) VALUES ('a', 3600001)", "sites_poll_timeout_range"},
    {"(site_id) VALUES ('')", "sites_site_id_valid"},
    {"(site_id) VALUES ('a/b')", "sites_site_id_valid"},
    {"(site_id) VALUES ('a b')", "sites_site_id_valid"},
    {"(site_id) VALUES ('..')", "sites_site_id_valid"},
    {"(site_id) VALUES ('.')", "sites_site_id_valid"},
    {"(site_id) VALUES (U&'caf\\00E9')", "sites_site_id_valid"},
    {"(site_id) VALUES (repeat('a', 129))", "sites_site_id_valid"},
    {"(site_id, paused_reason) VALUES ('a', 'why')", "sites_paused_reason_needs_pause"},
    {"(site_id, paused_at, paused_reason) VALUES ('a', now(), repeat('x', 501))",
     "sites_paused_reason_length"},
    {"(site_id, paused_at) VALUES ('a', 'infinity')", "sites_paused_at_finite"},
};
INSTANTIATE_TEST_SUITE_P(Sites, SiteConstraints, ::testing::ValuesIn(kBadSites),
                         [](const ::testing::TestParamInfo<BadSite>& p) {
                           return std::string(p.param.constraint) + "_" + std::to_string(p.index);
                         });

TEST(Sites, GoodSettingsAreStoredAndEveryChangeTouchesUpdatedAt) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.sites (site_id, requests_per_s, burst, max_in_flight, poll_interval_ms, "
       "poll_timeout_ms) VALUES ('Shop-1.eu_2', 0.5, 1, 1, 10, 3600000), (repeat('a', 128), NULL, NULL, "
       "NULL, NULL, NULL)");
  // The trigger sets updated_at whatever the UPDATE says.
  Exec(db,
       "UPDATE uppzy.sites SET created_at = now() - interval '1 day', updated_at = now() - interval '1 day'");
  EXPECT_EQ(
      QueryInt(db, "SELECT count(*) FROM uppzy.sites WHERE updated_at > created_at + interval '23 hours'"),
      2);
  Exec(
      db,
      "UPDATE uppzy.sites SET paused_at = now(), paused_reason = 'plan ended' WHERE site_id = 'Shop-1.eu_2'");
  EXPECT_EQ(Query(db, "SELECT paused_reason FROM uppzy.site_queues WHERE paused_at IS NOT NULL"),
            "plan ended");
}

TEST(Sites, WorkForAnUnknownSiteIsRefusedAtInsert) {
  const std::string db = test::MigratedDatabase();
  EXPECT_NE(
      ErrorOf(db, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) VALUES ('s', 'm', 'nope')")
          .find("chat_jobs_site_known"),
      std::string::npos);
  EXPECT_NE(ErrorOf(db, "INSERT INTO uppzy.session_closes (session_id, site_id) VALUES ('s', 'nope')")
                .find("session_closes_site_known"),
            std::string::npos);
  EXPECT_NE(ErrorOf(db, "SELECT uppzy.close_session('s', 'nope')").find("session_closes_site_known"),
            std::string::npos);
  EXPECT_NE(ErrorOf(db,
                    "INSERT INTO uppzy.chat_feedback (session_id, request_id, feedback, site_id) "
                    "VALUES ('s', 'r', 'good', 'nope')")
                .find("chat_feedback_site_known"),
            std::string::npos);
  // A site with work cannot be deleted; renaming it carries its work along.
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('a')");
  Enqueue(db, "a", 1);
  EXPECT_NE(ErrorOf(db, "DELETE FROM uppzy.sites WHERE site_id = 'a'").find("chat_jobs_site_known"),
            std::string::npos);
  Exec(db, "UPDATE uppzy.sites SET site_id = 'b' WHERE site_id = 'a'");
  EXPECT_EQ(Query(db, "SELECT site_id FROM uppzy.chat_jobs"), "b");
}

TEST(SiteClaims, EachSiteGetsItsShareWhateverTheOthersBacklog) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  Enqueue(db, "A", 100);
  Enqueue(db, "B", 100);
  // A's jobs are older and more urgent: a claim by priority alone would take only A's.
  Exec(db, "UPDATE uppzy.chat_jobs SET priority = 5, run_at = now() - interval '1 hour' WHERE site_id = 'A'");
  Store store(db);
  auto jobs = store.JobsClaimQueued("w", 30000, Scope("A", {{"A", 10}, {"B", 10}}));
  ASSERT_EQ(jobs.size(), 20u);
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 10}, {"B", 10}}));
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'submitting' AND site_id = 'B'"),
            10);
  // Uneven shares are kept too, and a site listed twice gets the sum.
  jobs = store.JobsClaimQueued("w", 30000, Scope("A", {{"A", 1}, {"B", 3}, {"B", 2}}));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 1}, {"B", 5}}));
  EXPECT_TRUE(store.JobsClaimQueued("w", 30000, Scope("A", {{"A", 0}, {"B", -1}})).empty());
}

TEST(SiteClaims, AFairScopeGoesRoundTheSitesWithWorkAndGivesALoneSiteTheWholeRoom) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B'), ('C')");
  Enqueue(db, "A", 100);
  Enqueue(db, "B", 3);
  Store store(db);
  // Room for 10: B's 3 are taken in the first round, A fills the rest; C has nothing and costs nothing.
  auto jobs = store.JobsClaimQueued("w", 30000, ClaimScope::Fair("A", {"A", "B", "C"}, 10));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 7}, {"B", 3}}));
  // A alone: the whole room, not a third of it.
  jobs = store.JobsClaimQueued("w", 30000, ClaimScope::Fair("A", {"A", "B", "C"}, 10));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 10}}));
  // Two sites with backlogs share the room evenly.
  Enqueue(db, "C", 50);
  jobs = store.JobsClaimQueued("w", 30000, ClaimScope::Fair("A", {"A", "B", "C"}, 10));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 5}, {"C", 5}}));
}

TEST(SiteClaims, ASiteOutsideTheScopeIsNeverClaimedAndIsReportedUnserved) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  Enqueue(db, "A", 5);
  Enqueue(db, "B", 7);
  Store store(db);
  store.WorkersHeartbeat("w-a", "host", 1, "A", {"A"}, 30000, 0, "closed", true);
  auto jobs = store.JobsClaimQueued("w-a", 30000, ClaimScope::DefaultOnly("A", 100));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 5}}));
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE site_id = 'B' AND state = 'queued'"), 7);

  EXPECT_EQ(Query(db,
                  "SELECT string_agg(coalesce(site_id, '-') || ':' || is_default || ':' || queued || ':' || "
                  "submitting || ':' || served, ' ' ORDER BY site_id NULLS FIRST) FROM uppzy.site_queues"),
            "-:true:0:0:true A:false:0:5:true B:false:7:0:false");
  EXPECT_EQ(Query(db, "SELECT oldest_queued_age IS NOT NULL FROM uppzy.site_queues WHERE site_id = 'B'"),
            "t");
  EXPECT_EQ(Query(db, "SELECT string_agg(DISTINCT unserved_by_site::text, ',') FROM uppzy.chat_job_health"),
            "{\"B\": 7}");

  // A worker holding B's key starts: B is served. When every worker is gone, nothing is.
  store.WorkersHeartbeat("w-b", "host", 2, "A", {"A", "B"}, 30000, 0, "closed", true);
  EXPECT_EQ(Query(db, "SELECT served FROM uppzy.site_queues WHERE site_id = 'B'"), "t");
  EXPECT_EQ(Query(db, "SELECT string_agg(DISTINCT unserved_by_site::text, ',') FROM uppzy.chat_job_health"),
            "{}");
  store.WorkersStopped("w-b");
  Exec(db, "UPDATE uppzy.workers SET heartbeat_at = now() - interval '1 minute' WHERE id = 'w-a'");
  EXPECT_EQ(Query(db, "SELECT string_agg(served::text, ',') FROM uppzy.site_queues"), "false,false,false");
}

TEST(SiteClaims, APausedSiteIsNotClaimedNorAdoptedAndAResumeWakesTheWorkers) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  Enqueue(db, "A", 3);
  Enqueue(db, "B", 3);
  Enqueue(db, "", 3);  // the default site's, when A is the default
  Store store(db);
  Exec(db, "UPDATE uppzy.sites SET paused_at = now(), paused_reason = 'key revoked' WHERE site_id = 'A'");
  auto jobs = store.JobsClaimQueued("w", 30000, Scope("A", {{"A", 10}, {"B", 10}}));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"B", 3}}))
      << "a pause of the default site holds its NULL-site rows too";
  EXPECT_EQ(Query(db, "SELECT paused_reason FROM uppzy.site_queues WHERE site_id = 'A'"), "key revoked");

  // A polling row of A whose lease ended is not adopted while A is paused.
  Exec(db,
       "UPDATE uppzy.chat_jobs SET state = 'polling', request_id = 'r', attempts = 1, locked_by = 'gone', "
       "lease_expires_at = now() - interval '1 second' WHERE id = (SELECT min(id) FROM uppzy.chat_jobs "
       "WHERE site_id = 'A')");
  EXPECT_TRUE(store.JobsAdoptPolling("w", 30000, Scope("A", {{"A", 10}}), 10).empty());

  Listener listener(db, "uppzy_chat_jobs_wakeup");
  Exec(db, "UPDATE uppzy.sites SET paused_at = NULL, paused_reason = NULL WHERE site_id = 'A'");
  EXPECT_GE(listener.Wait(2000), 1) << "a resume wakes the workers at once";
  auto adopted = store.JobsAdoptPolling("w", 30000, Scope("A", {{"A", 10}}), 10);
  ASSERT_EQ(adopted.size(), 1u);
  EXPECT_EQ(adopted[0].site_id, "A");
  jobs = store.JobsClaimQueued("w", 30000, Scope("A", {{"A", 10}, {"B", 10}}));
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"A", 5}}));
}

TEST(SiteClaims, TheDefaultShareTakesNullSiteRowsAndItsOwnBestFirst) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  Enqueue(db, "", 4);
  Enqueue(db, "A", 4);
  Enqueue(db, "B", 4);
  Exec(db, "UPDATE uppzy.chat_jobs SET priority = 1 WHERE site_id IS NULL AND id % 2 = 0");
  Store store(db);
  const std::string best = Query(db,
                                 "SELECT string_agg(id::text, ',' ORDER BY priority DESC, run_at, id) FROM "
                                 "(SELECT * FROM uppzy.chat_jobs WHERE site_id IS NULL OR site_id = 'A' "
                                 "ORDER BY priority DESC, run_at, id LIMIT 5) x");
  auto jobs = store.JobsClaimQueued("w", 30000, ClaimScope::DefaultOnly("A", 5));
  ASSERT_EQ(jobs.size(), 5u);
  std::string got;
  for (const auto& j : jobs) {
    EXPECT_EQ(j.site_id, "A") << "a NULL site reads as the default site";
    got += (got.empty() ? "" : ",") + std::to_string(j.id);
  }
  EXPECT_EQ(got, best);
  // The rows locked by the default lane and not taken were released: the next claim takes them.
  jobs = store.JobsClaimQueued("w", 30000, ClaimScope::DefaultOnly("A", 100));
  EXPECT_EQ(jobs.size(), 3u);
  // The single-site form takes NULL-site rows only.
  Enqueue(db, "", 2);
  jobs = store.JobsClaimQueued("w", 30000, 100);
  EXPECT_EQ(CountBySite(jobs), (std::map<std::string, int>{{"", 2}}));
}

TEST(SiteDeliveries, ARatingCarriesItsJobsSiteAndClosesTheirOwn) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  const long long job =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, site_id, state, attempts, "
               "request_id, answer, finished_at) VALUES ('s', 'm', 'B', 'completed', 1, "
               "'req_1', 'a', now()) RETURNING id");
  DeliveryStore store(db);
  const int64_t rating = store.FeedbackRateJob(job, "good", std::nullopt);
  EXPECT_EQ(Query(db, "SELECT site_id FROM uppzy.chat_feedback WHERE id = " + std::to_string(rating)), "B");
  EXPECT_NE(ErrorOf(db, "INSERT INTO uppzy.chat_feedback (job_id, feedback, site_id) VALUES (" +
                            std::to_string(job) + ", 'bad', 'A')")
                .find("the site_id given (A) is not the job's"),
            std::string::npos);

  const long long close_a = QueryInt(db, "SELECT uppzy.close_session('s', 'A')");
  const long long close_default = QueryInt(db, "SELECT uppzy.close_session('s')");
  EXPECT_NE(close_a, close_default) << "the same session id on two sites is two sessions";
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.close_session('s', 'A')"), close_a) << "a pending close is reused";
  EXPECT_EQ(QueryInt(db, "SELECT uppzy.close_session('s')"), close_default);

  // A worker serving A (its default) and not B: the close of A and the default one, not B's rating.
  EXPECT_TRUE(store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, ClaimScope::DefaultOnly("A", 10), 10)
                  .empty());
  auto closes =
      store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, ClaimScope::DefaultOnly("A", 10), 10);
  ASSERT_EQ(closes.size(), 2u);
  EXPECT_EQ(closes[0].site_id, "A");
  EXPECT_EQ(closes[1].site_id, "A");
  auto ratings = store.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, Scope("A", {{"B", 10}}), 10);
  ASSERT_EQ(ratings.size(), 1u);
  EXPECT_EQ(ratings[0].site_id, "B");
}

TEST(SiteDeliveries, TheOverallLimitCapsEveryShare) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B')");
  Exec(db,
       "INSERT INTO uppzy.session_closes (session_id, site_id) SELECT 's' || g, (ARRAY['A', 'B'])[1 + g % 2] "
       "FROM generate_series(1, 20) g");
  DeliveryStore store(db);
  auto got =
      store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, Scope("", {{"A", 5}, {"B", 5}}), 4);
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.session_closes WHERE state = 'sending'"), 4);
  got = store.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, Scope("", {{"A", 5}, {"B", 5}}), 100);
  EXPECT_EQ(got.size(), 10u);
}

TEST(SiteClaims, BothClaimFormsReadTheClaimIndexes) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('A'), ('B'), ('C')");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, site_id, state, attempts, finished_at, answer) "
       "SELECT 's', 'm', (ARRAY[NULL, 'A', 'B', 'C'])[1 + g % 4], 'completed', 1, now(), 'a' "
       "FROM generate_series(1, 20000) g");
  Enqueue(db, "", 2000);
  Enqueue(db, "A", 2000);
  Enqueue(db, "B", 2000);
  Exec(db, "ANALYZE uppzy.chat_jobs");
  pqxx::connection c(db);
  pqxx::nontransaction tx(c);
  tx.exec(std::string("PREPARE claim AS ") + store::sql::kJobsClaimQueued);
  auto plan = [&](const std::string& args) {
    std::string text;
    for (const auto& row : tx.exec("EXPLAIN (COSTS OFF) EXECUTE claim(" + args + ")")) {
      text += row[0].as<std::string>() + "\n";
    }
    return text;
  };
  for (const std::string& args : {std::string("'w', 30000, '{A}', '{10}', 'A', 10"),
                                  std::string("'w', 30000, '{\"\"}', '{10}', '', 10"),
                                  std::string("'w', 30000, '{A,B}', '{10,10}', 'A', 10")}) {
    const std::string p = plan(args);
    EXPECT_NE(p.find("Index Scan using chat_jobs_claimable_idx"), std::string::npos) << p;
    EXPECT_NE(p.find("Index Scan using chat_jobs_site_claimable_idx"), std::string::npos) << p;
    EXPECT_EQ(p.find("Seq Scan"), std::string::npos) << p;
  }
}

TEST(SitesUpgrade, ASingleSiteDatabaseKeepsItsRowsClaimable) {
  const std::string db = test::FreshDatabase();
  test::MigrateUpTo(db, "0008");
  Enqueue(db, "", 3);
  const long long done = QueryInt(db,
                                  "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, "
                                  "request_id, answer, finished_at) VALUES ('s', 'm', 'completed', 1, "
                                  "'req_1', 'a', now()) RETURNING id");
  Exec(db, "SELECT uppzy.close_session('s')");
  Store store(db);
  const auto applied = store.Migrate();
  ASSERT_GE(applied.size(), 1u);  // 0008 and what came after it
  EXPECT_EQ(applied[0], "0008_sites.sql");
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.sites"), 0);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE site_id IS NOT NULL"), 0);

  auto jobs = store.JobsClaimQueued("w", 30000, ClaimScope::DefaultOnly("shop", 10));
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].site_id, "shop");
  DeliveryStore deliveries(db);
  deliveries.FeedbackRateJob(done, "bad", std::string("no"));
  EXPECT_EQ(
      deliveries.DeliveriesClaim(DeliveryKind::kFeedback, "w", 30000, ClaimScope::DefaultOnly("shop", 10), 10)
          .size(),
      1u);
  EXPECT_EQ(deliveries.DeliveriesClaim(DeliveryKind::kSessionClose, "w", 30000, 10).size(), 1u);
  EXPECT_EQ(Query(db, "SELECT queued || ':' || submitting FROM uppzy.site_queues WHERE is_default"), "0:3");
}

}  // namespace
}  // namespace uppzy
