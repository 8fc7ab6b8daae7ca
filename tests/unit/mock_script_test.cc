// Parsing of the mock.* directives (src/mock/mock_script.h): pure, no server.
#include "mock/mock_script.h"

#include <gtest/gtest.h>

namespace uppzy::mock {
namespace {

using Kind = ScriptStep::Kind;

TEST(MockScriptTest, ParsesEveryStep) {
  struct Case {
    const char* token;
    ScriptStep want;
  } cases[] = {
      {"ok", {Kind::kOk}},
      {"processing", {Kind::kProcessing}},
      {"completed", {Kind::kCompleted}},
      {"failed", {Kind::kFailed}},
      {"hang", {Kind::kHang}},
      {"reset", {Kind::kReset}},
      {"garbage", {Kind::kGarbage}},
      {"huge", {Kind::kHuge}},
      {"503", {Kind::kStatus, 503, -1}},
      {"429", {Kind::kStatus, 429, -1}},
      {"429:7", {Kind::kStatus, 429, 7}},
      {"429:0", {Kind::kStatus, 429, 0}},
  };
  for (const Case& c : cases) {
    std::optional<ScriptStep> got = ParseScriptStep(c.token);
    ASSERT_TRUE(got.has_value()) << c.token;
    EXPECT_EQ(*got, c.want) << c.token;
  }
}

TEST(MockScriptTest, RejectsBadSteps) {
  for (const char* token : {"", "OK", "99", "600", "5o3", "429:", "429:x", "429:-1", "ok,", "hang "}) {
    EXPECT_FALSE(ParseScriptStep(token).has_value()) << '"' << token << '"';
  }
}

TEST(MockScriptTest, FindsDirectivesAmongWords) {
  std::string error;
  std::optional<Directives> d = ParseDirectives(
      "please answer\tmock.submit=429:7,503,ok mock.poll=processing,500,completed\n mock.ready=5000 "
      "mock.fail=some_reason mock.feedback=429,ok mock.close=500,ok trailing words",
      &error);
  ASSERT_TRUE(d.has_value()) << error;
  EXPECT_EQ(*d->submit, (Script{{Kind::kStatus, 429, 7}, {Kind::kStatus, 503, -1}, {Kind::kOk}}));
  EXPECT_EQ(*d->poll, (Script{{Kind::kProcessing}, {Kind::kStatus, 500, -1}, {Kind::kCompleted}}));
  EXPECT_EQ(*d->feedback, (Script{{Kind::kStatus, 429, -1}, {Kind::kOk}}));
  EXPECT_EQ(*d->close, (Script{{Kind::kStatus, 500, -1}, {Kind::kOk}}));
  EXPECT_EQ(d->ready_ms, 5000);
  EXPECT_EQ(d->fail, "some_reason");
}

TEST(MockScriptTest, PlainTextHasNoDirectives) {
  std::string error;
  for (const char* text :
       {"", "hello", "see mock.example.com", "mock.unknown=1", "xmock.submit=503", "mock.submit"}) {
    std::optional<Directives> d = ParseDirectives(text, &error);
    ASSERT_TRUE(d.has_value()) << text;
    EXPECT_FALSE(d->submit || d->poll || d->feedback || d->close || d->ready_ms || d->fail) << text;
  }
}

TEST(MockScriptTest, MalformedDirectivesAreErrorsThatNameTheKey) {
  for (const char* text : {"mock.submit=", "mock.submit=503,,ok", "mock.poll=done", "mock.ready=-1",
                           "mock.ready=soon", "mock.fail=", "hi mock.close=500,nope"}) {
    std::string error;
    EXPECT_FALSE(ParseDirectives(text, &error).has_value()) << text;
    EXPECT_NE(error.find("mock."), std::string::npos) << error;
  }
}

TEST(MockScriptTest, LastDirectiveWins) {
  std::string error;
  std::optional<Directives> d = ParseDirectives("mock.ready=1 mock.ready=2", &error);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->ready_ms, 2);
}

TEST(MockScriptTest, StepPositions) {
  Script s{{Kind::kStatus, 503, -1}, {Kind::kProcessing}};
  EXPECT_EQ(StepThenOk(s, 0).status, 503);
  EXPECT_EQ(StepThenOk(s, 1).kind, Kind::kProcessing);
  EXPECT_EQ(StepThenOk(s, 2).kind, Kind::kOk);
  EXPECT_EQ(StepThenOk(s, 1000).kind, Kind::kOk);
  EXPECT_EQ(StepThenLast(s, 0).status, 503);
  EXPECT_EQ(StepThenLast(s, 2).kind, Kind::kProcessing);
  EXPECT_EQ(StepThenLast(s, 1000).kind, Kind::kProcessing);
}

}  // namespace
}  // namespace uppzy::mock
