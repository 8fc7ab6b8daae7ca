// `uppzy-worker sites` as a real process against a real PostgreSQL: the listing with each site's queue
// (and the default site's), set of only the settings given, `none`, refusals that name the setting and
// change nothing (exit 2), pause and resume, and --json that parses with its field names.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/support.h"

namespace uppzy {
namespace {

using nlohmann::json;
using test::Exec;
using test::Query;

class SitesCli : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    Exec(db_, "INSERT INTO uppzy.sites (site_id, burst, max_in_flight) VALUES ('site-a', 5, 40)");
    Exec(db_,
         "INSERT INTO uppzy.chat_jobs (session_id, message, site_id, state, attempts, request_id) VALUES "
         "('s', 'm', 'site-a', 'queued', 0, NULL), ('s', 'm', 'site-a', 'queued', 0, NULL), "
         "('s', 'm', 'site-a', 'polling', 1, 'req_1'), ('s', 'm', NULL, 'queued', 0, NULL)");
  }

  int Run(std::vector<std::string> args, std::string* out) {
    return test::RunWorkerCli(db_, std::move(args), out);
  }
  json RunJson(std::vector<std::string> args, int expect_rc = 0) {
    return test::RunWorkerCliJson(db_, std::move(args), expect_rc);
  }

  // requests_per_s, burst, max_in_flight, poll_interval_ms, poll_timeout_ms as text, "" for NULL.
  std::string Settings(const std::string& site) {
    return Query(db_,
                 "SELECT concat_ws(',', coalesce(requests_per_s::text, ''), coalesce(burst::text, ''), "
                 "coalesce(max_in_flight::text, ''), coalesce(poll_interval_ms::text, ''), "
                 "coalesce(poll_timeout_ms::text, '')) FROM uppzy.sites WHERE site_id = '" +
                     site + "'");
  }

  std::string db_;
};

TEST_F(SitesCli, ListShowsEverySiteWithItsQueueAndTheDefaultSite) {
  std::string out;
  ASSERT_EQ(Run({"sites"}, &out), 0) << out;
  for (const char* s : {"(default)", "site-a", "max_in_flight", "queued"}) {
    EXPECT_NE(out.find(s), std::string::npos) << s << " missing from:\n" << out;
  }
  json j = RunJson({"sites", "list", "--json"});
  ASSERT_EQ(j.size(), 2u) << j.dump();
  const json& def = j[0];
  EXPECT_TRUE(def["site_id"].is_null());
  EXPECT_EQ(def["queued"], 1);
  const json& a = j[1];
  EXPECT_EQ(a["site_id"], "site-a");
  EXPECT_EQ(a["queued"], 2);
  EXPECT_EQ(a["polling"], 1);
  EXPECT_EQ(a["retrying"], 0);
  EXPECT_EQ(a["submitting"], 0);
  EXPECT_EQ(a["burst"], 5);
  EXPECT_EQ(a["max_in_flight"], 40);
  EXPECT_TRUE(a["requests_per_s"].is_null());
  EXPECT_TRUE(a["oldest_queued_age_s"].is_number()) << a.dump();
  EXPECT_EQ(a["served"], false) << "no worker is running";
  for (const char* field :
       {"site_id", "requests_per_s", "burst", "max_in_flight", "poll_interval_ms", "poll_timeout_ms",
        "poll_mode", "poll_target_delay_ms", "paused_at", "paused_reason", "queued", "retrying", "submitting",
        "polling", "oldest_queued_age_s", "served"}) {
    EXPECT_TRUE(a.contains(field)) << field;
  }
  json bare = RunJson({"sites", "--json"});
  ASSERT_EQ(bare.size(), 2u) << "`sites` alone lists: " << bare.dump();
  EXPECT_EQ(bare[1]["site_id"], "site-a");
}

TEST_F(SitesCli, SetChangesOnlyTheGivenSettingsAndNoneClears) {
  json j = RunJson({"sites", "set", "site-a", "--requests-per-s", "12.5", "--burst", "none", "--json"});
  EXPECT_EQ(j["created"], false);
  EXPECT_EQ(j["changed"]["burst"]["from"], 5);
  EXPECT_TRUE(j["changed"]["burst"]["to"].is_null());
  EXPECT_EQ(j["changed"]["requests_per_s"]["to"], 12.5);
  EXPECT_FALSE(j["changed"].contains("max_in_flight"));
  EXPECT_EQ(Settings("site-a"), "12.5,,40,,");

  std::string out;
  ASSERT_EQ(Run({"sites", "set", "site-b", "--poll-interval-ms", "250"}, &out), 0) << out;
  EXPECT_NE(out.find("site site-b: created"), std::string::npos) << out;
  EXPECT_NE(out.find("poll_interval_ms: none -> 250"), std::string::npos) << out;
  EXPECT_EQ(Settings("site-b"), ",,,250,");
  ASSERT_EQ(Run({"sites", "set", "site-b", "--poll-interval-ms", "250"}, &out), 0) << out;
  EXPECT_NE(out.find("nothing changed"), std::string::npos) << out;
}

TEST_F(SitesCli, ABadValueIsRefusedNamingTheSettingAndChangesNothing) {
  std::string out;
  EXPECT_EQ(Run({"sites", "set", "site-a", "--requests-per-s", "-1", "--burst", "9"}, &out), 2) << out;
  EXPECT_NE(out.find("--requests-per-s"), std::string::npos) << out;
  EXPECT_NE(out.find("sites_requests_per_s_positive"), std::string::npos) << out;
  EXPECT_EQ(Settings("site-a"), ",5,40,,") << "the burst given beside it is not stored either";

  EXPECT_EQ(Run({"sites", "set", "site-a", "--poll-timeout-ms", "5"}, &out), 2) << out;
  EXPECT_NE(out.find("--poll-timeout-ms must be between 100 and 3600000"), std::string::npos) << out;
  EXPECT_EQ(Run({"sites", "set", "site-a", "--burst", "many"}, &out), 2) << out;
  EXPECT_NE(out.find("--burst"), std::string::npos) << out;
  EXPECT_EQ(Run({"sites", "set", "site/../x", "--burst", "1"}, &out), 2) << out;
  // '..' is refused before it reaches the database (the same rule as sites_site_id_valid).
  EXPECT_EQ(Run({"sites", "set", "..", "--burst", "1"}, &out), 2) << out;
  EXPECT_NE(out.find("'..' is not a site_id"), std::string::npos) << out;
  EXPECT_EQ(Run({"sites", "set"}, &out), 2) << out;
  EXPECT_EQ(Settings("site-a"), ",5,40,,");
}

// A site's polling mode and target delay (migration 0009's columns) set from the CLI: what the workers
// read at their next refit, instead of an UPDATE by hand.
TEST_F(SitesCli, SetsTheSitesPollModeAndTargetDelay) {
  json j = RunJson(
      {"sites", "set", "site-a", "--poll-mode", "adaptive", "--poll-target-delay-ms", "2000", "--json"});
  EXPECT_TRUE(j["changed"]["poll_mode"]["from"].is_null());
  EXPECT_EQ(j["changed"]["poll_mode"]["to"], "adaptive");
  EXPECT_EQ(j["changed"]["poll_target_delay_ms"]["to"], 2000);
  EXPECT_EQ(
      Query(db_, "SELECT poll_mode || ',' || poll_target_delay_ms FROM uppzy.sites WHERE site_id = 'site-a'"),
      "adaptive,2000");
  EXPECT_EQ(Settings("site-a"), ",5,40,,") << "the other settings are left as they were";
  json list = RunJson({"sites", "list", "--json"});
  EXPECT_EQ(list[1]["poll_mode"], "adaptive") << list.dump();
  EXPECT_EQ(list[1]["poll_target_delay_ms"], 2000);

  std::string out;
  EXPECT_EQ(Run({"sites", "set", "site-a", "--poll-mode", "sometimes"}, &out), 2) << out;
  EXPECT_NE(out.find("--poll-mode"), std::string::npos) << out;
  EXPECT_EQ(Run({"sites", "set", "site-a", "--poll-target-delay-ms", "5"}, &out), 2) << out;
  EXPECT_NE(out.find("--poll-target-delay-ms must be between 100 and 600000"), std::string::npos) << out;
  EXPECT_EQ(
      Query(db_, "SELECT poll_mode || ',' || poll_target_delay_ms FROM uppzy.sites WHERE site_id = 'site-a'"),
      "adaptive,2000")
      << "a refused change changes nothing";

  ASSERT_EQ(Run({"sites", "set", "site-a", "--poll-mode", "none", "--poll-target-delay-ms", "none"}, &out), 0)
      << out;
  EXPECT_NE(out.find("poll_mode: adaptive -> none"), std::string::npos) << out;
  EXPECT_EQ(Query(db_,
                  "SELECT (poll_mode IS NULL AND poll_target_delay_ms IS NULL)::text FROM uppzy.sites "
                  "WHERE site_id = 'site-a'"),
            "true")
      << "none: the worker's own UPPZY_POLL_MODE and UPPZY_POLL_TARGET_DELAY_MS again";
}

TEST_F(SitesCli, PauseThenResume) {
  json j = RunJson({"sites", "pause", "site-a", "--reason", "vendor maintenance", "--json"});
  EXPECT_EQ(j["changed"]["paused_reason"]["to"], "vendor maintenance");
  EXPECT_TRUE(j["site"]["paused_at"].is_string());
  const std::string paused_at = Query(db_, "SELECT paused_at FROM uppzy.sites WHERE site_id = 'site-a'");
  ASSERT_FALSE(paused_at.empty());

  std::string out;
  ASSERT_EQ(Run({"sites", "pause", "site-a"}, &out), 0) << out;
  EXPECT_EQ(Query(db_, "SELECT paused_at FROM uppzy.sites WHERE site_id = 'site-a'"), paused_at)
      << "a second pause keeps the first one's start";
  EXPECT_EQ(Query(db_, "SELECT paused_reason FROM uppzy.sites WHERE site_id = 'site-a'"),
            "vendor maintenance");

  ASSERT_EQ(Run({"sites", "resume", "site-a"}, &out), 0) << out;
  EXPECT_NE(out.find("paused_reason: vendor maintenance -> none"), std::string::npos) << out;
  EXPECT_EQ(Query(db_,
                  "SELECT paused_at IS NULL AND paused_reason IS NULL FROM uppzy.sites WHERE site_id = "
                  "'site-a'"),
            "t");
  EXPECT_EQ(Settings("site-a"), ",5,40,,") << "settings untouched";

  j = RunJson({"sites", "pause", "site-new", "--json"});
  EXPECT_EQ(j["created"], true) << "an operator may pause a site before its first job";
  EXPECT_EQ(Query(db_, "SELECT paused_at IS NOT NULL FROM uppzy.sites WHERE site_id = 'site-new'"), "t");

  EXPECT_EQ(Run({"sites", "resume", "site-unknown"}, &out), 1) << out;
  EXPECT_NE(out.find("site-unknown"), std::string::npos) << out;
  EXPECT_EQ(Run({"sites", "pause", "site-a", "--reason", std::string(501, 'x')}, &out), 2) << out;
  EXPECT_NE(out.find("--reason"), std::string::npos) << out;
}

}  // namespace
}  // namespace uppzy
