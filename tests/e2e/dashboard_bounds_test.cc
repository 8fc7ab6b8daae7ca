// `uppzy-worker dashboard` as a real process over a job whose values are huge (metadata of 20 MB from
// before migrations/0007_input_limits.sql, a 2 MB result and answer, a long errors history): the job's
// page and JSON carry bounded markers instead of the values, sixteen concurrent views keep the process
// under 100 MB of resident memory, `uppzy-worker show --json` still prints every value whole, and
// times that are BC, far in the future or infinite are written as ISO strings that are right.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/support.h"
#include "uppzy/dashboard_store.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Exec;
using test::QueryInt;

constexpr long long kMetadataChars = 20'000'000;  // {"x": "aaa…"}: 9 bytes more as text
constexpr long long kResultChars = 2'000'000;
constexpr long long kAnswerBytes = 2'000'000;
constexpr int kErrorEntries = 3000;

// A /proc/<pid>/status field in KiB (VmRSS, VmHWM), -1 when absent.
long StatusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// `uppzy-worker dashboard --listen 127.0.0.1:0 --show-text`, its port read from its log.
class Dashboard {
 public:
  explicit Dashboard(const std::string& db) {
    proc_ = std::make_unique<test::Process>(
        std::vector<std::string>{UPPZY_WORKER_BIN, "dashboard", "--listen", "127.0.0.1:0", "--show-text"},
        std::map<std::string, std::string>{{"DATABASE_URL", db}});
    port_ = test::HttpPortFromLog(*proc_, 15s);
    if (port_.empty()) throw std::runtime_error("dashboard did not start: " + proc_->Log());
  }
  long Get(const std::string& path, std::string* body) const {
    return test::HttpGet("http://127.0.0.1:" + port_ + path, body);
  }
  pid_t pid() const { return proc_->pid(); }

 private:
  std::unique_ptr<test::Process> proc_;
  std::string port_;
};

class DashboardBounds : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    db_ = new std::string(test::MigratedDatabase());
    // A row as an app could write it before 0007 (the trigger that now refuses it is set aside).
    Exec(*db_, "ALTER TABLE uppzy.chat_jobs DISABLE TRIGGER chat_jobs_metadata_size");
    id_ = QueryInt(
        *db_,
        "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, finished_at, answer, "
        "result, metadata, last_error, errors) VALUES ('s', 'm', 'completed', 1, 'req_1', now(), "
        "repeat('z', " +
            std::to_string(kAnswerBytes) + "), jsonb_build_object('r', repeat('b', " +
            std::to_string(kResultChars) + ")), jsonb_build_object('x', repeat('a', " +
            std::to_string(kMetadataChars) +
            ")), repeat('e', 1000000), "
            "(SELECT jsonb_agg(jsonb_build_object('attempt', g, 'at', '2024-05-01T12:00:00.000Z', 'kind', "
            "'server_error', 'http_status', 503, 'message', CASE WHEN g = " +
            std::to_string(kErrorEntries) +
            " THEN repeat('m', 1000000) ELSE 'HTTP 503 ' || g END, 'request_id', NULL) ORDER BY g) "
            "FROM generate_series(1, " +
            std::to_string(kErrorEntries) + ") g)) RETURNING id");
    Exec(*db_, "ALTER TABLE uppzy.chat_jobs ENABLE TRIGGER chat_jobs_metadata_size");
  }
  static std::string* db_;
  static long long id_;
};
std::string* DashboardBounds::db_ = nullptr;
long long DashboardBounds::id_ = 0;

TEST_F(DashboardBounds, JobJsonAndPageCarryMarkersNotTheValues) {
  Dashboard d(*db_);
  const std::string id = std::to_string(id_);
  std::string body;
  ASSERT_EQ(d.Get("/api/jobs/" + id, &body), 200) << body.substr(0, 500);
  EXPECT_LT(body.size(), 64u * 1024) << "one job's JSON must stay small";
  const json j = json::parse(body);

  for (const char* key : {"metadata", "result"}) {
    const json& m = j[key];
    ASSERT_TRUE(m.is_object()) << key;
    EXPECT_EQ(m["truncated"], true) << key;
    EXPECT_EQ(m["full_value"], "uppzy-worker show " + id + " --json") << key;
    ASSERT_TRUE(m["preview"].is_string()) << key;
    EXPECT_EQ(m["preview"].get<std::string>().size(), 4096u) << key;
  }
  EXPECT_EQ(j["metadata"]["bytes"], kMetadataChars + 9);
  EXPECT_EQ(j["result"]["bytes"], kResultChars + 9);
  EXPECT_EQ(j["metadata"]["preview"].get<std::string>().substr(0, 10), "{\"x\": \"aaa");

  // errors: one marker entry, then the newest entries (oldest first) within the bound.
  const json& errors = j["errors"];
  ASSERT_TRUE(errors.is_array());
  ASSERT_GE(errors.size(), 2u);
  EXPECT_EQ(errors[0]["kind"], "truncated");
  EXPECT_EQ(errors[0]["entries"], kErrorEntries);
  EXPECT_EQ(errors[0]["omitted"].get<long long>() + static_cast<long long>(errors.size()) - 1, kErrorEntries);
  EXPECT_EQ(errors[0]["full_value"], "uppzy-worker show " + id + " --json");
  EXPECT_NE(errors[0]["message"].get<std::string>().find("left out"), std::string::npos);
  EXPECT_LE(errors.dump().size(), static_cast<size_t>(kDashboardValueMaxBytes) + 2048);
  // The newest entry (1 MB by itself) is cut down, and says so.
  const json& newest = errors.back();
  EXPECT_EQ(newest["truncated"], true);
  EXPECT_EQ(newest["kind"], "server_error");
  EXPECT_EQ(newest["attempt"], std::to_string(kErrorEntries));
  EXPECT_LT(newest["message"].get<std::string>().size(), 1200u);
  EXPECT_EQ(errors[errors.size() - 2]["message"], "HTTP 503 " + std::to_string(kErrorEntries - 1));

  const std::string answer = j["answer"].get<std::string>();
  EXPECT_LT(answer.size(), 4096u + 200);
  EXPECT_NE(answer.find("2000000 bytes in all; uppzy-worker show " + id + " --show-text prints it whole"),
            std::string::npos)
      << answer.substr(4096);
  EXPECT_LT(j["last_error"].get<std::string>().size(), 1200u);

  // The job's page is the same page for every job: the values come only through the JSON above.
  ASSERT_EQ(d.Get("/jobs/" + id, &body), 200);
  EXPECT_LT(body.size(), 64u * 1024);
  EXPECT_EQ(body.find(std::string(64, 'a')), std::string::npos);
}

TEST_F(DashboardBounds, SixteenConcurrentViewsStayUnder100MB) {
  Dashboard d(*db_);
  std::string body;
  ASSERT_EQ(d.Get("/healthz", &body), 200);
  const long before_kib = StatusKiB(d.pid(), "VmRSS");
  std::atomic<int> ok{0};
  std::vector<std::thread> viewers;
  for (int i = 0; i < 16; ++i) {
    viewers.emplace_back([&] {
      for (int round = 0; round < 2; ++round) {
        std::string b;
        if (d.Get("/jobs/" + std::to_string(id_), &b) == 200 &&
            d.Get("/api/jobs/" + std::to_string(id_), &b) == 200) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : viewers) t.join();
  EXPECT_EQ(ok.load(), 32);
  const long rss_kib = StatusKiB(d.pid(), "VmRSS");
  const long peak_kib = StatusKiB(d.pid(), "VmHWM");
  std::printf("dashboard VmRSS %ld KiB before, %ld KiB after 16 x 2 concurrent views; peak VmHWM %ld KiB\n",
              before_kib, rss_kib, peak_kib);
  EXPECT_GT(rss_kib, 0);
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the process starts above 100 MB (shadow memory) and keeps freed blocks in
  // quarantine, so bound what the views add: the unbounded dashboard grew by more than 1 GB here.
  EXPECT_LT(peak_kib - before_kib, 100 * 1024) << "the views' growth, with ASan's quarantine";
#else
  EXPECT_LT(rss_kib, 100 * 1024);
  EXPECT_LT(peak_kib, 100 * 1024) << "the peak, not only what is left after";
#endif
}

TEST_F(DashboardBounds, ShowJsonStillPrintsEveryValueWhole) {
  std::string out;
  ASSERT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "show", std::to_string(id_), "--json", "--show-text"},
                             {{"DATABASE_URL", *db_}}, &out),
            0)
      << out.substr(0, 500);
  const json j = json::parse(out.substr(out.find('{')));
  EXPECT_EQ(static_cast<long long>(j["metadata"]["x"].get<std::string>().size()), kMetadataChars);
  EXPECT_EQ(static_cast<long long>(j["result"]["r"].get<std::string>().size()), kResultChars);
  EXPECT_EQ(j["errors"].size(), static_cast<size_t>(kErrorEntries));
  EXPECT_EQ(j["errors"].back()["message"].get<std::string>().size(), 1000000u);
  EXPECT_EQ(static_cast<long long>(j["answer"].get<std::string>().size()), kAnswerBytes);
  EXPECT_EQ(j["last_error"].get<std::string>().size(), 1000000u);
}

TEST(DashboardDates, BcFarFutureAndInfiniteTimesAreRightIsoStrings) {
  const std::string db = test::MigratedDatabase();
  const long long id = QueryInt(
      db,
      "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, run_at, "
      "created_at, submitted_at, poll_deadline, lease_expires_at, updated_at) VALUES ('s', 'm', "
      "'polling', 1, 'req_1', '0044-03-15 12:00:00.5+00 BC', '294276-12-31 23:59:59.999999+00', "
      "'4713-01-01 00:00:00+00 BC', '-infinity', 'infinity', '0001-01-01 00:00:00+00 BC') RETURNING id");
  const long long plain =
      QueryInt(db,
               "INSERT INTO uppzy.chat_jobs (session_id, message, created_at) VALUES ('s', 'm', "
               "'2024-05-01 12:00:03.123456+00') RETURNING id");
  Dashboard d(db);
  std::string body;
  ASSERT_EQ(d.Get("/api/jobs/" + std::to_string(id), &body), 200) << body;
  json j = json::parse(body);
  EXPECT_EQ(j["run_at"], "-000043-03-15T12:00:00.500Z");
  EXPECT_EQ(j["created_at"], "+294276-12-31T23:59:59.999Z");
  EXPECT_EQ(j["submitted_at"], "-004712-01-01T00:00:00.000Z");
  EXPECT_EQ(j["updated_at"], "0000-01-01T00:00:00.000Z");  // 1 BC is year 0
  EXPECT_EQ(j["poll_deadline"], "-infinity");
  EXPECT_EQ(j["lease_expires_at"], "infinity");
  ASSERT_EQ(d.Get("/api/jobs/" + std::to_string(plain), &body), 200) << body;
  EXPECT_EQ(json::parse(body)["created_at"], "2024-05-01T12:00:03.123Z");

  // The listing (its cursor is created_at in microseconds, beyond a bigint in the year 294276) still
  // answers, newest first, and pages on.
  ASSERT_EQ(d.Get("/api/jobs?limit=1", &body), 200) << body;
  j = json::parse(body);
  ASSERT_EQ(j["jobs"].size(), 1u);
  EXPECT_EQ(j["jobs"][0]["created_at"], "+294276-12-31T23:59:59.999Z");
  ASSERT_TRUE(j["next"].is_string()) << body;
  ASSERT_EQ(d.Get("/api/jobs?limit=1&after=" + j["next"].get<std::string>(), &body), 200) << body;
  j = json::parse(body);
  ASSERT_EQ(j["jobs"].size(), 1u);
  EXPECT_EQ(j["jobs"][0]["id"], plain);
}

}  // namespace
}  // namespace uppzy
