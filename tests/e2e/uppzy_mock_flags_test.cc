// The uppzy-mock binary's flags for sites, rate limits and answer times (issues 10 and 11): bad values
// are refused at start-up with a message that names the option; good ones reach the server (seen
// through /_mock/stats and plain requests). The behaviour itself is tested in-process by
// tests/unit/mock_sites_http_test.cc.
#include <gtest/gtest.h>

#include "support/support.h"

namespace uppzy {
namespace {

TEST(UppzyMockFlags, BadValuesAreRefusedNamingTheOption) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"--ready-dist", "lognormal:median_ms=12000"}, "--ready-dist: lognormal needs sigma"},
      {{"--ready-dist", "lognormal:median_ms=12000,sigma=-1"}, "--ready-dist: sigma"},
      {{"--ready-dist", "uniform:min_ms=9,max_ms=3"}, "--ready-dist: min_ms"},
      {{"--ready-dist", "poisson:mean_ms=3"}, "--ready-dist: unknown distribution"},
      {{"--site", "A"}, "--site:"},
      {{"--site", "A=k", "--site", "A=j"}, "--site: site A is given twice"},
      {{"--rate-limit", "A=0"}, "--rate-limit: rate"},
      {{"--rate-limit", "A=5,0"}, "--rate-limit: burst"},
      {{"--site", "A=k", "--rate-limit", "B=5"}, "--rate-limit: site B is not given by any --site"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {UPPZY_MOCK_BIN, "--port", "0"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    std::string out;
    int code = test::RunCommand(argv, {}, &out);
    EXPECT_NE(code, 0) << c.says;
    EXPECT_NE(out.find(c.says), std::string::npos) << out;
  }
}

TEST(UppzyMockFlags, SitesRateLimitsAndReadyDistReachTheServer) {
  test::MockProcess mock({"--site", "A=key-a", "--site", "B=key-b", "--rate-limit", "A=50/s,10",
                          "--rate-limit", "B=20", "--ready-dist", "lognormal:median_ms=12000,sigma=0.6",
                          "--seed", "7"});
  std::string body;
  EXPECT_EQ(test::HttpGet(mock.base_url() + "/m2m/sites/A/chat/requests/x", &body), 401) << body;
  EXPECT_EQ(test::HttpGet(mock.base_url() + "/m2m/sites/C/chat/requests/x", &body), 404) << body;
  EXPECT_NE(body.find("site not found"), std::string::npos) << body;

  nlohmann::json stats = mock.Stats();
  EXPECT_EQ(stats["sites"]["A"]["rate_limit"], (nlohmann::json{{"per_second", 50.0}, {"burst", 10}}));
  EXPECT_EQ(stats["sites"]["B"]["rate_limit"], (nlohmann::json{{"per_second", 20.0}, {"burst", 20}}));
  EXPECT_EQ(stats["sites"]["A"]["unauthorized"], 1);
  EXPECT_EQ(stats["sites_total"]["unknown_site"], 1);
  EXPECT_EQ(stats["answers"]["records"], 0);

  EXPECT_EQ(test::HttpGet(mock.root() + "/_mock/requests", &body), 200);
  EXPECT_EQ(body, "[]");
}

}  // namespace
}  // namespace uppzy
