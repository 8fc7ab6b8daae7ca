// The dashboard's input rules (src/dashboard/params.h), one row per edge.
#include "dashboard/params.h"

#include <gtest/gtest.h>

#include <map>

namespace uppzy::dashboard {
namespace {

// 2024-05-01T12:00:00Z
constexpr int64_t kNow = 1714564800LL * 1000000;

ParsedJobQuery Parse(std::map<std::string, std::string> params, bool paging = true) {
  return ParseJobQuery(
      [&](std::string_view name) -> std::optional<std::string> {
        auto it = params.find(std::string(name));
        if (it == params.end()) return std::nullopt;
        return it->second;
      },
      kNow, paging);
}

TEST(DashboardParams, ParseTime) {
  struct Case {
    const char* text;
    std::optional<int64_t> want;
  };
  const Case cases[] = {
      {"1h", kNow - 3600LL * 1000000},
      {"90s", kNow - 90LL * 1000000},
      {"7d", kNow - 7 * 86400LL * 1000000},
      {"2024-05-01", kNow - 12 * 3600LL * 1000000},
      {"2024-05-01T12:00:00Z", kNow},
      {"2024-05-01T12:00Z", kNow},
      {"2024-05-01T12:00", kNow},
      {"2024-05-01 12:00:00", kNow},
      {"2024-05-01T12:00:00.25Z", kNow + 250000},
      {"2024-05-01T12:00:00.123456Z", kNow + 123456},
      {"2024-05-01T14:00:00+02:00", kNow},
      {"2024-05-01T14:00:00+0200", kNow},
      {"2024-05-01T11:30:00-00:30", kNow},
      {"2024-02-29", 1709164800LL * 1000000},
      {"1970-01-01", 0},
      {"", std::nullopt},
      {"0s", std::nullopt},
      {"1", std::nullopt},
      {"1 h", std::nullopt},
      {"yesterday", std::nullopt},
      {"2023-02-29", std::nullopt},
      {"2024-13-01", std::nullopt},
      {"2024-04-31", std::nullopt},
      {"2024-05-01T24:00:00Z", std::nullopt},
      {"2024-05-01T12:60Z", std::nullopt},
      {"2024-05-01T12:00:00.Z", std::nullopt},
      {"2024-05-01T12:00:00+2", std::nullopt},
      {"2024-05-01T12:00:00Zjunk", std::nullopt},
      {"2024-5-1", std::nullopt},
      {"1969-12-31", std::nullopt},
      {"2201-01-01", std::nullopt},  // the years 1970 to 2200 (uppzy/iso_time.h)
      {"2999-01-01T00:00:00+02:00", std::nullopt},
      {"２０２４-05-01", std::nullopt},
  };
  for (const auto& c : cases) EXPECT_EQ(ParseTime(c.text, kNow), c.want) << c.text;
}

TEST(DashboardParams, CursorRoundTripsAndRefusesAnythingElse) {
  for (const DashboardJobCursor c : {DashboardJobCursor{0, 1}, DashboardJobCursor{kNow + 123, 42},
                                     DashboardJobCursor{253402300799999999, 9223372036854775807}}) {
    const std::string text = EncodeCursor(c);
    EXPECT_EQ(text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos)
        << text;
    auto back = DecodeCursor(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(back->created_us, c.created_us);
    EXPECT_EQ(back->id, c.id);
  }
  for (const char* bad :
       {"", "x", "djE6", "djE6MTIz", "djE6MTIzOi0x", "eDE6MTIzOjQ1", "djE6MTIzOjQ1!", "djE6MTIzOjA",
        "djE6LTE6MQ", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk6MQ", "djE6MTIzOjQ1Og"}) {
    EXPECT_FALSE(DecodeCursor(bad)) << bad;
  }
}

TEST(DashboardParams, ParseId) {
  EXPECT_EQ(ParseId("1"), 1);
  EXPECT_EQ(ParseId("9223372036854775807"), 9223372036854775807LL);
  for (const char* bad : {"", "0", "01", "-1", "+1", "1.0", "1e3", "abc", " 1", "9223372036854775808",
                          "99999999999999999999"}) {
    EXPECT_FALSE(ParseId(bad)) << bad;
  }
}

TEST(DashboardParams, JobQuery) {
  auto q = Parse({});
  EXPECT_TRUE(q.error.empty());
  EXPECT_TRUE(q.filter.empty());
  EXPECT_EQ(q.limit, 50);
  EXPECT_FALSE(q.after);

  q = Parse({{"state", "failed"},
             {"error_kind", "server_error"},
             {"job_key", "k"},
             {"session_id", "s"},
             {"since", "2h"},
             {"until", "1h"},
             {"limit", "500"},
             {"after", EncodeCursor({5, 6})}});
  ASSERT_TRUE(q.error.empty()) << q.error;
  EXPECT_EQ(q.filter.state, "failed");
  EXPECT_EQ(q.filter.error_kind, "server_error");
  EXPECT_EQ(q.filter.job_key, "k");
  EXPECT_EQ(q.filter.session_id, "s");
  EXPECT_EQ(q.filter.since_us, kNow - 7200LL * 1000000);
  EXPECT_EQ(q.filter.until_us, kNow - 3600LL * 1000000);
  EXPECT_EQ(q.limit, 500);
  EXPECT_EQ(q.after->id, 6);

  // Empty values mean "any".
  q = Parse({{"state", ""}, {"error_kind", ""}, {"since", ""}, {"after", ""}, {"limit", ""}});
  EXPECT_TRUE(q.error.empty()) << q.error;
  EXPECT_TRUE(q.filter.empty());

  const std::map<std::string, std::string> bad[] = {
      {{"state", "done"}},
      {{"state", "FAILED"}},
      {{"error_kind", "oops"}},
      {{"limit", "0"}},
      {{"limit", "501"}},
      {{"limit", "x"}},
      {{"since", "soon"}},
      {{"until", "2024-99-01"}},
      {{"since", "1h"}, {"until", "2h"}},
      {{"since", "1h"}, {"until", "1h"}},
      {{"after", "nope"}},
      {{"job_key", std::string(256, 'k')}},
  };
  for (const auto& params : bad) {
    const auto r = Parse(params);
    EXPECT_FALSE(r.error.empty()) << params.begin()->first << "=" << params.begin()->second;
    EXPECT_EQ(r.error.find(params.begin()->first), 0u) << "the error names the parameter: " << r.error;
  }
  // Without paging, after and limit are not read.
  EXPECT_TRUE(Parse({{"after", "nope"}, {"limit", "x"}}, false).error.empty());
}

TEST(DashboardParams, SettingsProblems) {
  EXPECT_TRUE(DashboardSettingsProblems("127.0.0.1:8080", "").empty());
  EXPECT_TRUE(DashboardSettingsProblems("localhost:0", "").empty());
  EXPECT_TRUE(DashboardSettingsProblems("[::1]:8080", "").empty());
  EXPECT_TRUE(DashboardSettingsProblems("0.0.0.0:8080", "0123456789abcdef").empty());
  auto p = DashboardSettingsProblems("0.0.0.0:8080", "");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].find("UPPZY_DASHBOARD_TOKEN"), 0u) << p[0];
  p = DashboardSettingsProblems("10.0.0.5:8080", "short");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].find("at least 16"), std::string::npos);
  for (const char* addr :
       {"", "8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536", ":8080"}) {
    p = DashboardSettingsProblems(addr, "");
    ASSERT_EQ(p.size(), 1u) << addr;
    EXPECT_EQ(p[0].find("UPPZY_DASHBOARD_ADDR"), 0u) << p[0];
  }
}

TEST(DashboardParams, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

}  // namespace
}  // namespace uppzy::dashboard
