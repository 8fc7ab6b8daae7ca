// Logging of hostile values: control bytes are escaped in text lines, and the API key never appears.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

#include "uppzy/log.h"

namespace uppzy {
namespace {

class LogLines : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("log_test", sink);
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { SetLogRedaction(""); }
  std::string Lines() {
    spdlog::default_logger()->flush();
    return out_.str();
  }
  std::ostringstream out_;
};

TEST_F(LogLines, ControlBytesFromUppzyAreEscapedNotWrittenRaw) {
  LogEvent(spdlog::level::warn, "poll_failed",
           {{"detail", std::string("HTTP 500: x\0y\rFAKE level=error\x1b[31m\n", 36)}});
  const std::string line = Lines();
  EXPECT_EQ(line, "poll_failed detail=\"HTTP 500: x\\x00y\\rFAKE level=error\\x1b[31m\\n\"\n");
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\0'), std::string::npos);
}

TEST_F(LogLines, PlainValuesStayUnquoted) {
  LogEvent(spdlog::level::info, "worker_started", {{"worker_id", "w-1"}, {"site_id", "site.a"}});
  EXPECT_EQ(Lines(), "worker_started worker_id=w-1 site_id=site.a\n");
}

TEST_F(LogLines, TheApiKeyIsRedactedFromEveryValue) {
  SetLogRedaction("uppzy_live_SECRET_0123");
  LogEvent(spdlog::level::err, "incident_opened",
           {{"detail", "HTTP 401: key uppzy_live_SECRET_0123 revoked"}});
  JobLogFields f;
  f.job_id = 7;
  LogJob(spdlog::level::warn, "job_retrying", f, "echo uppzy_live_SECRET_0123");
  const std::string lines = Lines();
  EXPECT_EQ(lines.find("SECRET"), std::string::npos) << lines;
  EXPECT_NE(lines.find("key [redacted] revoked"), std::string::npos) << lines;
  EXPECT_NE(lines.find("echo [redacted]"), std::string::npos) << lines;
}

}  // namespace
}  // namespace uppzy
