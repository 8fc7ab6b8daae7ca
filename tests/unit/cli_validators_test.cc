// The command line's setting values: a number or `none` (uppzy-worker sites set). Ranges are the
// database's (named constraints); these only read the text.
#include <gtest/gtest.h>

#include "cli/validators.h"

namespace uppzy::cli {
namespace {

TEST(CliValidators, IntOrNone) {
  EXPECT_EQ(ParseIntOrNone("12"), std::optional<std::optional<int>>(12));
  EXPECT_EQ(ParseIntOrNone("-3"), std::optional<std::optional<int>>(-3)) << "the database names the range";
  const auto none = ParseIntOrNone("none");
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  for (const char* bad : {"", "1.5", "12ms", "none ", "NONE", "99999999999", " 1"}) {
    EXPECT_FALSE(ParseIntOrNone(bad).has_value()) << bad;
  }
}

TEST(CliValidators, NumberOrNone) {
  EXPECT_EQ(ParseNumberOrNone("0.5"), std::optional<std::optional<double>>(0.5));
  EXPECT_EQ(ParseNumberOrNone("-1"), std::optional<std::optional<double>>(-1.0));
  EXPECT_FALSE(ParseNumberOrNone("none")->has_value());
  for (const char* bad : {"", "inf", "nan", "1/s", "fast"}) {
    EXPECT_FALSE(ParseNumberOrNone(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace uppzy::cli
