// Configuration: defaults, ranges, and every problem reported at once, each naming its setting.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "uppzy/config.h"

namespace uppzy {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::map<std::string, std::string> Minimal() {
  return {{"DATABASE_URL", "postgresql://db/x"}, {"UPPZY_SITE_ID", "site-1"}, {"UPPZY_API_KEY", "k"}};
}

TEST(Config, MinimalSettingsGiveTheDocumentedDefaults) {
  auto r = LoadConfig(Env(Minimal()));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.base_url, "https://api.uppzy.com/api/v1");
  EXPECT_EQ(r.config.policy.poll_interval.count(), 2500);
  EXPECT_EQ(r.config.policy.poll_timeout.count(), 45000);
  EXPECT_EQ(r.config.max_response_bytes, 1048576);
  EXPECT_EQ(r.config.lease_ms, 30000);
  EXPECT_EQ(r.config.log_format, "text");
  EXPECT_EQ(r.config.site.key_fingerprint, KeyFingerprint("k"));
  EXPECT_EQ(r.config.site.key_fingerprint.size(), 12u);
  EXPECT_FALSE(r.config.worker_id.empty());
  EXPECT_EQ(r.config.shared_budget, "on");
  // Issue 13's defaults: Little's-law room, a quiet idle worker, writes that linger briefly.
  EXPECT_EQ(r.config.max_in_flight, 10000);
  EXPECT_EQ(r.config.listen_fallback_ms, 30000);
  EXPECT_EQ(r.config.write_linger_ms, 20);
  EXPECT_EQ(r.config.rescue_full_interval_ms, 30000);
}

TEST(Config, IdleAndLingerSettingsOutOfRangeStopTheStartNamingTheSetting) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"UPPZY_LISTEN_FALLBACK_MS", "999"},
                                                        {"UPPZY_LISTEN_FALLBACK_MS", "600001"},
                                                        {"UPPZY_LISTEN_FALLBACK_MS", "soon"},
                                                        {"UPPZY_WRITE_LINGER_MS", "-1"},
                                                        {"UPPZY_WRITE_LINGER_MS", "1001"},
                                                        {"UPPZY_RESCUE_FULL_INTERVAL_MS", "99"},
                                                        {"UPPZY_RESCUE_FULL_INTERVAL_MS", "3600001"}}) {
    auto env = Minimal();
    env[name] = value;
    auto r = LoadConfig(Env(env));
    ASSERT_EQ(r.problems.size(), 1u) << name << "=" << value;
    EXPECT_NE(r.problems[0].find(name), std::string::npos) << r.problems[0];
  }
  auto env = Minimal();
  env["UPPZY_LISTEN_FALLBACK_MS"] = "1000";
  env["UPPZY_WRITE_LINGER_MS"] = "0";
  env["UPPZY_RESCUE_FULL_INTERVAL_MS"] = "100";
  auto r = LoadConfig(Env(env));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.listen_fallback_ms, 1000);
  EXPECT_EQ(r.config.write_linger_ms, 0);
  EXPECT_EQ(r.config.rescue_full_interval_ms, 100);
}

TEST(Config, SiteIdsTheDatabaseRefusesAndABadBudgetSwitchStopTheStart) {
  for (const char* site : {".", ".."}) {
    auto env = Minimal();
    env["UPPZY_SITE_ID"] = site;
    auto r = LoadConfig(Env(env));
    ASSERT_FALSE(r.problems.empty()) << site;
    EXPECT_NE(r.problems[0].find("UPPZY_SITE_ID"), std::string::npos) << r.problems[0];
  }
  auto env = Minimal();
  env["UPPZY_SHARED_BUDGET"] = "maybe";
  auto r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("UPPZY_SHARED_BUDGET"), std::string::npos) << r.problems[0];
  env["UPPZY_SHARED_BUDGET"] = "off";
  EXPECT_EQ(LoadConfig(Env(env)).config.shared_budget, "off");
}

TEST(Config, EveryProblemIsReportedAtOnceNamingItsSetting) {
  auto r = LoadConfig(Env({{"UPPZY_POLL_TIMEOUT_MS", "-5"},
                           {"UPPZY_MAX_IN_FLIGHT", "lots"},
                           {"UPPZY_BACKOFF_BASE_MS", "5000"},
                           {"UPPZY_BACKOFF_MAX_MS", "100"},
                           {"UPPZY_LOG_LEVEL", "loud"},
                           {"UPPZY_HTTP_ADDR", "nowhere"}}));
  std::string all;
  for (const auto& p : r.problems) all += p + "\n";
  for (const char* name :
       {"DATABASE_URL", "UPPZY_SITE_ID", "UPPZY_API_KEY", "UPPZY_POLL_TIMEOUT_MS", "UPPZY_MAX_IN_FLIGHT",
        "UPPZY_BACKOFF_MAX_MS", "UPPZY_LOG_LEVEL", "UPPZY_HTTP_ADDR"}) {
    EXPECT_NE(all.find(name), std::string::npos) << name << " not named in:\n" << all;
  }
}

TEST(Config, PlainHttpOnlyForLoopback) {
  for (const char* ok : {"http://127.0.0.1:8080/api/v1", "http://localhost:1/api/v1", "http://[::1]:9/x",
                         "https://api.uppzy.com/api/v1/"}) {
    auto env = Minimal();
    env["UPPZY_BASE_URL"] = ok;
    EXPECT_TRUE(LoadConfig(Env(env)).problems.empty()) << ok;
  }
  for (const char* bad : {"http://api.uppzy.com/api/v1", "ftp://127.0.0.1/", "http://127.0.0.1.evil.com/"}) {
    auto env = Minimal();
    env["UPPZY_BASE_URL"] = bad;
    auto r = LoadConfig(Env(env));
    ASSERT_EQ(r.problems.size(), 1u) << bad;
    EXPECT_NE(r.problems[0].find("UPPZY_BASE_URL"), std::string::npos);
  }
}

TEST(Config, ApiKeyFromFileAndExactlyOneSource) {
  const std::string path = testing::TempDir() + "/uppzy-key";
  std::ofstream(path) << "file-key\n";
  auto env = Minimal();
  env.erase("UPPZY_API_KEY");
  env["UPPZY_API_KEY_FILE"] = path;
  auto r = LoadConfig(Env(env));
  ASSERT_TRUE(r.problems.empty());
  EXPECT_EQ(r.config.site.api_key, "file-key");
  env["UPPZY_API_KEY"] = "k";
  r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("exactly one"), std::string::npos);
  env.erase("UPPZY_API_KEY");
  env["UPPZY_API_KEY_FILE"] = "/nonexistent/key";
  r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("UPPZY_API_KEY_FILE"), std::string::npos);
}

TEST(Config, KeysDirectoryGivesTheDefaultSiteAndEveryProblemNamesTheSetting) {
  const std::string dir = testing::TempDir() + "/uppzy-config-keys";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directory(dir);
  std::ofstream(dir + "/site-a") << "key-aaaa\n";
  auto env = Minimal();
  env.erase("UPPZY_API_KEY");
  env.erase("UPPZY_SITE_ID");
  env["UPPZY_API_KEYS_DIR"] = dir;
  auto r = LoadConfig(Env(env));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.site.site_id, "site-a") << "the only site is the default";
  EXPECT_EQ(r.config.site.api_key, "key-aaaa");
  EXPECT_EQ(r.config.site.key_fingerprint, KeyFingerprint("key-aaaa"));
  EXPECT_EQ(r.config.keys.keys_dir, dir);

  std::ofstream(dir + "/site-b") << "key-bbbb\n";
  r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].rfind("UPPZY_SITE_ID is required: UPPZY_API_KEYS_DIR", 0), 0u) << r.problems[0];
  env["UPPZY_SITE_ID"] = "site-b";
  r = LoadConfig(Env(env));
  ASSERT_TRUE(r.problems.empty()) << r.problems.front();
  EXPECT_EQ(r.config.site.api_key, "key-bbbb");

  env["UPPZY_API_KEY"] = "key-env";  // site-b keyed twice
  r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("UPPZY_API_KEYS_DIR"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("UPPZY_API_KEY keys too"), std::string::npos) << r.problems[0];
  env.erase("UPPZY_API_KEY");

  std::ofstream(dir + "/site c") << "key-cccc\n";
  std::ofstream(dir + "/site-d") << "";
  env["UPPZY_MAX_IN_FLIGHT"] = "0";
  r = LoadConfig(Env(env));
  std::string all;
  for (const auto& p : r.problems) all += p + "\n";
  EXPECT_NE(all.find("UPPZY_API_KEYS_DIR: '" + dir + "/site c': the file name must be a site_id"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("UPPZY_API_KEYS_DIR: '" + dir + "/site-d' is empty"), std::string::npos) << all;
  EXPECT_NE(all.find("UPPZY_MAX_IN_FLIGHT"), std::string::npos) << "reported with the others:\n" << all;

  env.erase("UPPZY_MAX_IN_FLIGHT");
  env["UPPZY_API_KEYS_DIR"] = dir + "/nowhere";
  r = LoadConfig(Env(env));
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0], "UPPZY_API_KEYS_DIR: '" + dir + "/nowhere' does not exist");
  std::filesystem::remove_all(dir);
}

TEST(Config, CaFileMustBeAReadablePemFileAndIsNamedWhenNot) {
  const std::string good = testing::TempDir() + "/uppzy-ca.pem";
  std::ofstream(good) << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const std::string empty = testing::TempDir() + "/uppzy-empty.pem";
  std::ofstream(empty) << "";
  auto env = Minimal();
  EXPECT_EQ(LoadConfig(Env(env)).config.ca_file, "") << "unset: libcurl's default";
  env["UPPZY_CA_FILE"] = good;
  auto r = LoadConfig(Env(env));
  EXPECT_TRUE(r.problems.empty());
  EXPECT_EQ(r.config.ca_file, good);
  for (const auto& [path, why] :
       std::map<std::string, std::string>{{"/nonexistent/ca.pem", "does not exist"},
                                          {testing::TempDir(), "not a regular file"},
                                          {empty, "holds no PEM certificate"}}) {
    env["UPPZY_CA_FILE"] = path;
    r = LoadConfig(Env(env));
    ASSERT_EQ(r.problems.size(), 1u) << path;
    EXPECT_EQ(r.problems[0].rfind("UPPZY_CA_FILE: ", 0), 0u) << r.problems[0];
    EXPECT_NE(r.problems[0].find(why), std::string::npos) << r.problems[0];
  }
}

TEST(Config, ProblemsNeverEchoTheApiKey) {
  auto env = Minimal();
  env["UPPZY_API_KEY"] = "sk-very-secret";
  env["UPPZY_SITE_ID"] = "bad site!";
  auto r = LoadConfig(Env(env));
  ASSERT_FALSE(r.problems.empty());
  for (const auto& p : r.problems) EXPECT_EQ(p.find("sk-very-secret"), std::string::npos);
}

}  // namespace
}  // namespace uppzy

namespace uppzy {
namespace {

std::string AllProblems(const ConfigResult& r) {
  std::string all;
  for (const auto& p : r.problems) all += p + "\n";
  return all;
}

TEST(HostileConfig, KeyFileFromDevZeroIsRefusedWithoutReadingItWhole) {
  auto env = Minimal();
  env.erase("UPPZY_API_KEY");
  env["UPPZY_API_KEY_FILE"] = "/dev/zero";
  const std::string all = AllProblems(LoadConfig(Env(env)));
  EXPECT_NE(all.find("UPPZY_API_KEY_FILE: '/dev/zero' is larger than 4096 bytes"), std::string::npos) << all;
}

TEST(HostileConfig, KeyFileAtTheBoundIsReadAndOneByteMoreIsRefused) {
  const std::string path = ::testing::TempDir() + "/uppzy_key_bound";
  auto env = Minimal();
  env.erase("UPPZY_API_KEY");
  env["UPPZY_API_KEY_FILE"] = path;
  std::ofstream(path, std::ios::binary) << std::string(kMaxKeyFileBytes, 'k');
  auto ok = LoadConfig(Env(env));
  EXPECT_TRUE(ok.problems.empty()) << AllProblems(ok);
  EXPECT_EQ(ok.config.site.api_key.size(), kMaxKeyFileBytes);
  std::ofstream(path, std::ios::binary) << std::string(kMaxKeyFileBytes + 1, 'k');
  EXPECT_NE(AllProblems(LoadConfig(Env(env))).find("is larger than 4096 bytes"), std::string::npos);
}

TEST(HostileConfig, KeyWithAControlCharacterIsNamed) {
  auto env = Minimal();
  env["UPPZY_API_KEY"] = std::string("abc\0def", 7);
  EXPECT_NE(AllProblems(LoadConfig(Env(env))).find("UPPZY_API_KEY: the key contains a control character"),
            std::string::npos);
}

TEST(HostileConfig, MalformedDatabaseUrlStopsStartUpNamingTheSetting) {
  for (const char* bad : {"postgresql://u@127.0.0.1/db?no_such_option=1", "host=127.0.0.1 port"}) {
    auto env = Minimal();
    env["DATABASE_URL"] = bad;
    const std::string all = AllProblems(LoadConfig(Env(env)));
    EXPECT_EQ(all.rfind("DATABASE_URL: ", 0), 0u) << bad << " gave:\n" << all;
  }
}

}  // namespace
}  // namespace uppzy
