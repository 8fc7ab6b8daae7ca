// Sites of the mock (src/mock/mock_sites.h): flag parsing, the token bucket and the per-second counts
// on a fake clock, and the gate's per-site keys. Pure, no server, no sleeping.
#include "mock/mock_sites.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace uppzy::mock {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using Verdict = Admission::Verdict;

const SteadyTime kT0 = SteadyTime() + std::chrono::hours(1);

SteadyTime At(int64_t ms) { return kT0 + milliseconds(ms); }

TEST(MockSitesTest, ParsesSiteKeys) {
  std::string error;
  std::optional<SiteKey> k = ParseSiteKey("site-A=key=with=equals", &error);
  ASSERT_TRUE(k.has_value()) << error;
  EXPECT_EQ(k->site, "site-A");
  EXPECT_EQ(k->key, "key=with=equals");
  for (const char* bad : {"", "A", "=k", "A=", "A/b=k", "A=k y", "site with space=k"}) {
    error.clear();
    EXPECT_FALSE(ParseSiteKey(bad, &error).has_value()) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(MockSitesTest, ParsesRateLimits) {
  struct Case {
    const char* text;
    double per_second;
    uint32_t burst;
  } cases[] = {
      {"A=50/s,10", 50, 10}, {"B=20", 20, 20}, {"C=2.5/s", 2.5, 3},
      {"D=0.2", 0.2, 1},     {"E=7,1", 7, 1},  {"F=1000000/s,1000000", 1e6, 1000000},
  };
  for (const Case& c : cases) {
    std::string error;
    auto got = ParseRateLimit(c.text, &error);
    ASSERT_TRUE(got.has_value()) << c.text << ": " << error;
    EXPECT_EQ(got->first, std::string(c.text).substr(0, 1)) << c.text;
    EXPECT_DOUBLE_EQ(got->second.per_second, c.per_second) << c.text;
    EXPECT_EQ(got->second.burst, c.burst) << c.text;
  }
  for (const char* bad : {"A", "A=", "A=0", "A=-1", "A=x", "A=5/m", "A=5/s,", "A=5,0", "A=5,1.5", "A=5,x",
                          "A=nan", "A=inf", "A=2000000", "=5", "A=5/s,10,3"}) {
    std::string error;
    EXPECT_FALSE(ParseRateLimit(bad, &error).has_value()) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(MockSitesTest, BucketAllowsTheBurstThenTheRate) {
  TokenBucket bucket({.per_second = 5, .burst = 10});
  int accepted = 0;
  for (int i = 0; i < 100; ++i) accepted += bucket.TryTake(At(0)) == 0;
  EXPECT_EQ(accepted, 10) << "a full bucket gives its burst at once";

  // 2 s later: 10 more tokens (capped at the burst); the 99 refused above took none.
  accepted = 0;
  for (int i = 0; i < 100; ++i) accepted += bucket.TryTake(At(2000)) == 0;
  EXPECT_EQ(accepted, 10);

  // Then one request every 200 ms is exactly the rate: all accepted, and nothing more.
  for (int64_t t = 2200; t <= 4000; t += 200) {
    EXPECT_EQ(bucket.TryTake(At(t)), 0) << t;
    EXPECT_GT(bucket.TryTake(At(t)), 0) << t;
  }
}

TEST(MockSitesTest, RetryAfterIsWholeSecondsUntilATokenAndAtLeastOne) {
  TokenBucket fast({.per_second = 5, .burst = 1});
  EXPECT_EQ(fast.TryTake(At(0)), 0);
  EXPECT_EQ(fast.TryTake(At(0)), 1) << "200 ms away rounds up to 1 s";

  TokenBucket slow({.per_second = 0.25, .burst = 1});  // one token every 4 s
  EXPECT_EQ(slow.TryTake(At(0)), 0);
  EXPECT_EQ(slow.TryTake(At(0)), 4);
  EXPECT_EQ(slow.TryTake(At(1500)), 3) << "2.5 s to go";
  EXPECT_EQ(slow.TryTake(At(3999)), 1);
  EXPECT_EQ(slow.TryTake(At(4000)), 0);
  EXPECT_EQ(slow.TryTake(At(1000)), 4) << "a time going backwards refills nothing";

  slow.Refill();
  EXPECT_EQ(slow.TryTake(At(4000)), 0) << "refilled";
}

TEST(MockSitesTest, SecondCountsKeepTheNewestHour) {
  SecondCounts counts;
  EXPECT_EQ(counts.Window(2), (std::vector<uint32_t>{0, 0, 0}));
  counts.Add(0);
  counts.Add(0);
  counts.Add(2);
  counts.Add(1);  // late, still in the window
  EXPECT_EQ(counts.Window(3), (std::vector<uint32_t>{2, 1, 1, 0}));
  EXPECT_EQ(counts.Window(1), (std::vector<uint32_t>{2, 1})) << "seconds after `current` are left out";

  // An hour and more later: the window slides, old seconds are gone, reused slots start at zero.
  const int64_t later = SecondCounts::kSeconds + 1;
  counts.Add(later);
  EXPECT_EQ(SecondCounts::FirstOfWindow(later), 2);
  std::vector<uint32_t> w = counts.Window(later);
  ASSERT_EQ(w.size(), static_cast<size_t>(SecondCounts::kSeconds));
  EXPECT_EQ(w.front(), 1u) << "second 2";
  EXPECT_EQ(w.back(), 1u) << "second 3601";
  uint64_t sum = 0;
  for (uint32_t n : w) sum += n;
  EXPECT_EQ(sum, 2u);
  counts.Add(0);  // too old: dropped
  EXPECT_EQ(counts.Window(later).front(), 1u);

  counts.Clear();
  EXPECT_EQ(counts.Window(1), (std::vector<uint32_t>{0, 0}));
}

TEST(MockSitesTest, SummarizeGivesMaxAndNearestRankP99) {
  EXPECT_EQ(Summarize({}).max, 0u);
  std::vector<uint32_t> counts(200, 1);
  counts[7] = 50;
  counts[8] = 40;
  counts[9] = 30;
  PerSecondSummary s = Summarize(counts);
  EXPECT_EQ(s.max, 50u);
  EXPECT_EQ(s.p99, 30u) << "rank 198 of 200";
  EXPECT_EQ(Summarize({3}).p99, 3u);
}

TEST(MockSitesTest, PerSiteKeysIsolateSitesAndUnknownSitesAre404) {
  SiteGate gate({{"A", "key-a"}, {"B", "key-b"}}, "unused", {}, kT0);
  EXPECT_EQ(gate.Admit("A", "key-a", At(0)).verdict, Verdict::kAdmitted);
  EXPECT_EQ(gate.Admit("B", "key-b", At(0)).verdict, Verdict::kAdmitted);
  EXPECT_EQ(gate.Admit("A", "key-b", At(0)).verdict, Verdict::kUnauthorized) << "another site's key";
  EXPECT_EQ(gate.Admit("A", std::nullopt, At(0)).verdict, Verdict::kUnauthorized);
  EXPECT_EQ(gate.Admit("B", "key-b", At(0)).verdict, Verdict::kAdmitted) << "B does not suffer from A's 401s";
  EXPECT_EQ(gate.Admit("C", "key-a", At(0)).verdict, Verdict::kUnknownSite);
  EXPECT_EQ(gate.Admit("C", std::nullopt, At(0)).verdict, Verdict::kUnknownSite);
  EXPECT_EQ(gate.Admit("unused", "unused", At(0)).verdict, Verdict::kUnknownSite);
  EXPECT_EQ(gate.Admit("", "key-b", At(0)).verdict, Verdict::kAdmitted) << "no site: any listed key";
  EXPECT_EQ(gate.Admit("", "unused", At(0)).verdict, Verdict::kUnauthorized) << "--api-key is unused";

  json stats;
  gate.AddStats(At(0), &stats);
  EXPECT_EQ(stats["sites"]["A"]["requests"], 1);
  EXPECT_EQ(stats["sites"]["A"]["unauthorized"], 2);
  EXPECT_EQ(stats["sites"]["B"]["requests"], 2);
  EXPECT_EQ(stats["sites"]["B"]["unauthorized"], 0);
  EXPECT_FALSE(stats["sites"].contains("C"));
  EXPECT_EQ(stats["sites_total"]["unknown_site"], 3);
  EXPECT_EQ(stats["sites_total"]["unauthorized"], 3);
  EXPECT_EQ(stats["sites_total"]["untracked"], 1);
}

TEST(MockSitesTest, WithoutSitesEverySiteTakesTheOneKey) {
  SiteGate gate({}, "k", {}, kT0);
  EXPECT_EQ(gate.Admit("any", "k", At(0)).verdict, Verdict::kAdmitted);
  EXPECT_EQ(gate.Admit("other", "k", At(0)).verdict, Verdict::kAdmitted);
  EXPECT_EQ(gate.Admit("any", "x", At(0)).verdict, Verdict::kUnauthorized);
  EXPECT_EQ(gate.Admit("", "k", At(0)).verdict, Verdict::kAdmitted);
  for (size_t i = 0; i < SiteGate::kMaxUnlistedSites + 10; ++i) {
    EXPECT_EQ(gate.Admit("s" + std::to_string(i), "k", At(0)).verdict, Verdict::kAdmitted);
  }
  json stats;
  gate.AddStats(At(0), &stats);
  EXPECT_EQ(stats["sites"].size(), SiteGate::kMaxUnlistedSites) << "bounded";
  EXPECT_EQ(stats["sites"]["any"]["requests"], 1);
  EXPECT_EQ(stats["sites"]["any"]["rate_limit"], nullptr);
}

TEST(MockSitesTest, RateLimitPerSiteWithPerSecondWindows) {
  SiteGate gate({{"A", "ka"}, {"B", "kb"}}, "", {{"A", RateLimit{.per_second = 2, .burst = 3}}}, kT0);
  // Second 0: 10 requests of A (3 pass: the burst), 10 of B (no limit).
  for (int i = 0; i < 10; ++i) {
    Admission a = gate.Admit("A", "ka", At(100));
    if (i < 3) {
      EXPECT_EQ(a.verdict, Verdict::kAdmitted) << i;
    } else {
      EXPECT_EQ(a.verdict, Verdict::kRateLimited) << i;
      EXPECT_EQ(a.retry_after_s, 1) << "half a second to the next token";
    }
    EXPECT_EQ(gate.Admit("B", "kb", At(100)).verdict, Verdict::kAdmitted);
  }
  EXPECT_EQ(gate.Admit("A", "wrong", At(100)).verdict, Verdict::kUnauthorized) << "key first";
  // Second 2 (1.9 s later): 3.8 tokens, capped at 3.
  int passed = 0;
  for (int i = 0; i < 10; ++i) passed += gate.Admit("A", "ka", At(2000)).verdict == Verdict::kAdmitted;
  EXPECT_EQ(passed, 3);

  json stats;
  gate.AddStats(At(2500), &stats);
  const json& a = stats["sites"]["A"];
  EXPECT_EQ(a["requests"], 6);
  EXPECT_EQ(a["rate_limited"], 14);
  EXPECT_EQ(a["unauthorized"], 1);
  EXPECT_EQ(a["rate_limit"], (json{{"per_second", 2.0}, {"burst", 3}}));
  EXPECT_EQ(a["first_second"], 0);
  EXPECT_EQ(a["per_second"], (json{3, 0, 3}));
  EXPECT_EQ(a["rate_limited_per_second"], (json{7, 0, 7}));
  EXPECT_EQ(a["max_per_second"], 3);
  EXPECT_EQ(a["p99_per_second"], 3);
  EXPECT_EQ(stats["sites"]["B"]["per_second"], (json{10, 0, 0}));
  const json& total = stats["sites_total"];
  EXPECT_EQ(total["requests"], 16);
  EXPECT_EQ(total["rate_limited"], 14);
  EXPECT_EQ(total["per_second"], (json{13, 0, 3}));
  EXPECT_EQ(total["max_per_second"], 13);

  gate.Reset();
  gate.AddStats(At(2500), &stats);
  EXPECT_EQ(stats["sites"]["A"]["requests"], 0);
  EXPECT_EQ(stats["sites"]["A"]["per_second"], (json{0, 0, 0}));
  EXPECT_EQ(stats["sites_total"]["unknown_site"], 0);
  passed = 0;
  for (int i = 0; i < 10; ++i) passed += gate.Admit("A", "ka", At(2500)).verdict == Verdict::kAdmitted;
  EXPECT_EQ(passed, 3) << "a reset refills the bucket";
}

}  // namespace
}  // namespace uppzy::mock
