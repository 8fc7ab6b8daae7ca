// Durations of operator commands and retention settings: "90s", "30m", "1h", "7d".
#include <gtest/gtest.h>

#include "uppzy/duration.h"

namespace uppzy {
namespace {

using std::chrono::seconds;

TEST(Duration, ParsesEachUnit) {
  EXPECT_EQ(ParseDuration("90s"), seconds(90));
  EXPECT_EQ(ParseDuration("30m"), seconds(1800));
  EXPECT_EQ(ParseDuration("1h"), seconds(3600));
  EXPECT_EQ(ParseDuration("7d"), seconds(7 * 86400));
  EXPECT_EQ(ParseDuration("36500d"), seconds(36500LL * 86400));
}

TEST(Duration, RefusesEverythingElse) {
  for (const char* bad : {"", "s", "5", "5x", "1.5h", "-1h", "+1h", " 1h", "1h ", "1 h", "1h30m", "0s",
                          "36501d", "99999999999999999999s", "h1"}) {
    EXPECT_FALSE(ParseDuration(bad).has_value()) << bad;
  }
  EXPECT_EQ(ParseDuration("0s", /*allow_zero=*/true), seconds(0));
}

TEST(Duration, FormatsInTheLargestExactUnit) {
  EXPECT_EQ(FormatDuration(seconds(0)), "0s");
  EXPECT_EQ(FormatDuration(seconds(45)), "45s");
  EXPECT_EQ(FormatDuration(seconds(5400)), "90m");
  EXPECT_EQ(FormatDuration(seconds(7200)), "2h");
  EXPECT_EQ(FormatDuration(seconds(30 * 86400)), "30d");
  for (const char* s : {"90s", "30m", "12h", "7d"}) EXPECT_EQ(FormatDuration(*ParseDuration(s)), s);
}

}  // namespace
}  // namespace uppzy
