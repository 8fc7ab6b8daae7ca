// Retention and stats-interval settings: defaults, durations, "off", and problems naming the setting.
#include <gtest/gtest.h>

#include <map>

#include "uppzy/config.h"

namespace uppzy {
namespace {

using std::chrono::seconds;

EnvLookup Env(std::map<std::string, std::string> extra) {
  std::map<std::string, std::string> vars = {
      {"DATABASE_URL", "postgresql://db/x"}, {"UPPZY_SITE_ID", "site-1"}, {"UPPZY_API_KEY", "k"}};
  for (auto& [k, v] : extra) vars[k] = v;
  return [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(RetentionConfig, DefaultsAreSevenThirtySevenDays) {
  auto r = LoadConfig(Env({}));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.retain_completed, seconds(7 * 86400));
  EXPECT_EQ(r.config.retain_failed, seconds(30 * 86400));
  EXPECT_EQ(r.config.retain_cancelled, seconds(7 * 86400));
  EXPECT_EQ(r.config.stats_interval_ms, 5000);
}

TEST(RetentionConfig, DurationsAndOff) {
  auto r = LoadConfig(Env({{"UPPZY_RETAIN_COMPLETED", "12h"},
                           {"UPPZY_RETAIN_FAILED", "off"},
                           {"UPPZY_RETAIN_CANCELLED", "90m"},
                           {"UPPZY_STATS_INTERVAL_MS", "250"}}));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.retain_completed, seconds(12 * 3600));
  EXPECT_EQ(r.config.retain_failed, seconds(0));
  EXPECT_EQ(r.config.retain_cancelled, seconds(90 * 60));
  EXPECT_EQ(r.config.stats_interval_ms, 250);
}

TEST(RetentionConfig, EveryBadValueIsReportedNamingItsSetting) {
  auto r = LoadConfig(Env({{"UPPZY_RETAIN_COMPLETED", "7"},
                           {"UPPZY_RETAIN_FAILED", "-1d"},
                           {"UPPZY_RETAIN_CANCELLED", "a week"},
                           {"UPPZY_STATS_INTERVAL_MS", "5"}}));
  ASSERT_EQ(r.problems.size(), 4u);
  std::string all;
  for (const auto& p : r.problems) all += p + "\n";
  for (const char* name : {"UPPZY_RETAIN_COMPLETED", "UPPZY_RETAIN_FAILED", "UPPZY_RETAIN_CANCELLED",
                           "UPPZY_STATS_INTERVAL_MS"}) {
    EXPECT_NE(all.find(name), std::string::npos) << name << " missing from:\n" << all;
  }
}

}  // namespace
}  // namespace uppzy
