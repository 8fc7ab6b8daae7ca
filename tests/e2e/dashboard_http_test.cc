// `uppzy-worker dashboard` as a real process on 127.0.0.1:0 against a real PostgreSQL: every /api
// endpoint, bad input (each a 4xx with a JSON error, never a 500), the read-only mode, the token login
// with its HttpOnly/SameSite cookie and CSRF token, actions through the operator SQL functions (and
// as a login that has only the uppzy_operator role), and no message or answer text without
// --show-text. The browser side is tested in tests/browser/.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "store/translate.h"
#include "support/support.h"
#include "uppzy/ops_store.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Exec;
using test::Query;
using test::QueryInt;

constexpr const char* kToken = "test-token-0123456789abcdef";
constexpr const char* kSentinelMessage = "SENTINEL-MESSAGE-5521";
constexpr const char* kSentinelAnswer = "SENTINEL-ANSWER-5521";

struct Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::vector<std::string>> headers;  // lower-case names
  json Json() const { return json::parse(body, nullptr, false); }
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() || it->second.empty() ? "" : it->second.front();
  }
};

size_t CollectBody(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

size_t CollectHeader(char* p, size_t size, size_t n, void* out) {
  std::string line(p, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*static_cast<std::map<std::string, std::vector<std::string>>*>(out))[name].push_back(value);
  }
  return size * n;
}

// One HTTP request; `body` set makes it a POST.
Response Request(const std::string& url, const std::optional<std::string>& body = std::nullopt,
                 const std::vector<std::string>& headers = {}) {
  Response r;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  if (body) {
    bool typed = false;
    for (const auto& h : headers) typed = typed || h.rfind("Content-Type:", 0) == 0;
    if (!typed) list = curl_slist_append(list, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->c_str());
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(c);
  return r;
}

// `uppzy-worker dashboard --listen 127.0.0.1:0`, its port read from the dashboard_listening line.
class Dashboard {
 public:
  Dashboard(const std::string& db, std::map<std::string, std::string> env = {},
            std::vector<std::string> args = {}) {
    env["DATABASE_URL"] = db;
    std::vector<std::string> argv = {UPPZY_WORKER_BIN, "dashboard"};
    if (std::find(args.begin(), args.end(), "--listen") == args.end())
      args.insert(args.begin(), {"--listen", "127.0.0.1:0"});
    for (auto& a : args) argv.push_back(a);
    proc_ = std::make_unique<test::Process>(argv, env);
    port_ = test::HttpPortFromLog(*proc_, 15s);
    if (port_.empty()) throw std::runtime_error("dashboard did not start: " + proc_->Log());
  }
  std::string Url(const std::string& path) const { return "http://127.0.0.1:" + port_ + path; }
  Response Get(const std::string& path, const std::vector<std::string>& headers = {}) const {
    return Request(Url(path), std::nullopt, headers);
  }
  Response Post(const std::string& path, const std::string& body,
                const std::vector<std::string>& headers = {}) const {
    return Request(Url(path), body, headers);
  }
  test::Process& process() { return *proc_; }

 private:
  std::unique_ptr<test::Process> proc_;
  std::string port_;
};

std::string Bearer() { return std::string("Authorization: Bearer ") + kToken; }

class DashboardHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = test::MigratedDatabase();
    failed_ = QueryInt(
        db_,
        "INSERT INTO uppzy.chat_jobs (job_key, session_id, message, state, attempts, max_attempts, "
        "error_kind, last_error, last_http_status, errors, created_at, finished_at) VALUES "
        "('key-failed', 'sess-a', '" +
            std::string(kSentinelMessage) +
            "', 'failed', 3, 3, 'server_error', 'HTTP 503', 503, "
            "'[{\"attempt\": 1, \"kind\": \"server_error\", \"http_status\": 503, \"message\": \"HTTP "
            "503\"}, {\"attempt\": 2, \"kind\": \"server_error\", \"http_status\": 503, \"message\": "
            "\"HTTP 503\"}]', now() - interval '10 minutes', now() - interval '9 minutes') RETURNING id");
    completed_ =
        QueryInt(db_,
                 "INSERT INTO uppzy.chat_jobs (job_key, session_id, message, state, attempts, answer, "
                 "request_id, created_at, finished_at) VALUES ('key-done', 'sess-a', '" +
                     std::string(kSentinelMessage) + "', 'completed', 1, '" + kSentinelAnswer +
                     "', 'req_1', now() - interval '5 hours', now() - interval '5 hours' + interval '3 "
                     "seconds') RETURNING id");
    queued_ = QueryInt(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('sess-b', '" +
                                std::string(kSentinelMessage) + "') RETURNING id");
    polling_ =
        QueryInt(db_,
                 "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id) VALUES "
                 "('sess-b', 'm', 'polling', 1, 'req_2') RETURNING id");
    incident_ =
        QueryInt(db_,
                 "INSERT INTO uppzy.incidents (kind, http_status, detail, api_key_fingerprint, opened_by) "
                 "VALUES ('unauthorized', 401, 'HTTP 401', 'abcdef123456', 'w-1') RETURNING id");
    Exec(db_,
         "INSERT INTO uppzy.workers (id, host, pid, version, lease_ms, jobs_in_flight, breaker_state, "
         "heartbeat_at, "
         "stopped_at) VALUES ('w-alive', 'h1', 1, 'v', 30000, 3, 'closed', now(), NULL), "
         "('w-gone', 'h2', 2, 'v', 1000, 0, 'open', now() - interval '10 seconds', NULL), "
         "('w-stopped', 'h3', 3, 'v', 30000, 0, 'closed', now() - interval '1 minute', now() - interval '1 "
         "minute'), "
         "('w-ancient', 'h4', 4, 'v', 30000, 0, 'closed', now() - interval '3 days', NULL)");
    Exec(db_, "INSERT INTO uppzy.chat_feedback (job_id, feedback) VALUES (" + std::to_string(completed_) +
                  ", 'good')");
  }

  std::string State(long long id) {
    return Query(db_, "SELECT state FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
  }

  std::string db_;
  long long failed_ = 0, completed_ = 0, queued_ = 0, polling_ = 0, incident_ = 0;
};

void ExpectJsonError(const Response& r, long status, const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  const json j = r.Json();
  ASSERT_FALSE(j.is_discarded()) << what << ": not JSON: " << r.body;
  ASSERT_TRUE(j.contains("error") && j["error"].is_string()) << what << ": " << r.body;
  EXPECT_FALSE(j["error"].get<std::string>().empty()) << what;
  EXPECT_NE(r.Header("content-type").find("application/json"), std::string::npos) << what;
}

TEST_F(DashboardHttp, PagesAndAssetsAnswerWithSecurityHeaders) {
  Dashboard d(db_);
  EXPECT_EQ(d.Get("/healthz").status, 200);
  for (const std::string& path : std::vector<std::string>{"/", "/jobs", "/jobs/" + std::to_string(failed_)}) {
    const Response r = d.Get(path);
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_NE(r.Header("content-type").find("text/html"), std::string::npos) << path;
    EXPECT_EQ(
        r.Header("content-security-policy").find("default-src 'self'; script-src 'self'; style-src 'self'"),
        0u)
        << path;
    EXPECT_EQ(r.Header("x-content-type-options"), "nosniff") << path;
    EXPECT_EQ(r.Header("x-frame-options"), "DENY") << path;
    EXPECT_NE(r.body.find("id=\"mode-banner\""), std::string::npos) << path << ": no read-only banner";
    EXPECT_NE(r.body.find("Read-only."), std::string::npos) << path;
    EXPECT_EQ(r.body.find("<script>"), std::string::npos) << path << ": inline script";
    EXPECT_EQ(r.body.find(" style="), std::string::npos) << path << ": inline style";
  }
  const Response js = d.Get("/static/app.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_NE(js.Header("content-type").find("text/javascript"), std::string::npos);
  for (const char* sink : {".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("}) {
    EXPECT_EQ(js.body.find(sink), std::string::npos) << "the script must not use " << sink;
  }
  EXPECT_NE(d.Get("/static/app.css").Header("content-type").find("text/css"), std::string::npos);
  EXPECT_EQ(d.Get("/static/icon.svg").status, 200);
  EXPECT_EQ(d.Get("/static/nope.js").status, 404);
  EXPECT_EQ(d.Get("/jobs/abc").status, 404);
}

TEST_F(DashboardHttp, OverviewAgreesWithTheViews) {
  Dashboard d(db_);
  const Response r = d.Get("/api/overview");
  ASSERT_EQ(r.status, 200) << r.body;
  const json o = r.Json();
  ASSERT_EQ(o["states"].size(), 7u);
  for (const auto& s : o["states"]) {
    const std::string state = s["state"];
    EXPECT_EQ(s["jobs"].get<long long>(),
              QueryInt(db_, "SELECT jobs FROM uppzy.chat_job_stats WHERE state = '" + state + "'"))
        << state;
  }
  EXPECT_EQ(o["states"][0]["state"], "queued");
  EXPECT_EQ(o["states"][0]["jobs"], 1);
  EXPECT_TRUE(o["states"][0]["oldest_age_seconds"].is_number());
  ASSERT_EQ(o["health"].size(), 2u);
  EXPECT_EQ(o["health"][0]["period"], "1 hour");
  EXPECT_EQ(o["health"][0]["finished"], 1);
  EXPECT_EQ(o["health"][0]["failed"], 1);
  EXPECT_EQ(o["health"][0]["failures_by_kind"]["server_error"], 1);
  EXPECT_EQ(o["health"][1]["period"], "24 hours");
  EXPECT_EQ(o["health"][1]["finished"], 2);
  EXPECT_EQ(o["health"][1]["completed"], 1);
  EXPECT_DOUBLE_EQ(
      o["health"][1]["retry_rate"].get<double>(),
      std::stod(Query(db_, "SELECT retry_rate FROM uppzy.chat_job_health WHERE period = '24 hours'")));
  EXPECT_NEAR(o["health"][1]["p50_seconds"].get<double>(), 3.0, 0.01);
  // The chart holds the same finished jobs as the 24-hour window.
  const json& pm = o["finished_per_minute"];
  EXPECT_EQ(pm["minutes"], 1440);
  long long charted = 0;
  for (const auto& row : pm["rows"]) {
    EXPECT_GE(row[0].get<int>(), 0);
    EXPECT_LT(row[0].get<int>(), 1440);
    charted += row[1].get<long long>() + row[2].get<long long>() + row[3].get<long long>();
  }
  EXPECT_EQ(charted, 2);
  ASSERT_EQ(o["incidents"].size(), 1u);
  EXPECT_EQ(o["incidents"][0]["id"], incident_);
  EXPECT_EQ(o["incidents"][0]["api_key_fingerprint"], "abcdef123456");
  std::map<std::string, std::string> workers;
  for (const auto& w : o["workers"]) workers[w["id"]] = w["status"];
  EXPECT_EQ(workers, (std::map<std::string, std::string>{
                         {"w-alive", "alive"}, {"w-gone", "gone"}, {"w-stopped", "stopped"}}));
  EXPECT_EQ(o["workers"][0]["id"], "w-alive");
  EXPECT_EQ(o["workers"][0]["jobs_in_flight"], 3);
  ASSERT_EQ(o["feedback"].size(), 2u);
  EXPECT_EQ(o["feedback"][0]["good"], 1);
  EXPECT_EQ(o["read_only"], true);
}

TEST_F(DashboardHttp, OverviewShowsEachSiteWithItsQueueServedPausedAndPolling) {
  // site-a: one queued job, one completed in the last hour (4 status calls, seen 1 s after ready), a
  // live worker holding its key. site-b: paused with a reason, an open incident, no worker.
  Exec(db_,
       "INSERT INTO uppzy.sites (site_id) VALUES ('site-a'); "
       "INSERT INTO uppzy.sites (site_id, paused_at, paused_reason) VALUES "
       "('site-b', now(), '<b>plan</b> renewal')");
  Exec(db_, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) VALUES ('sess-s', 'm', 'site-a')");
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (job_key, session_id, message, state, attempts, answer, request_id, "
       "site_id, polls, answer_ready_after_ms, answer_seen_after_ms, created_at, finished_at) VALUES "
       "('key-site-a', 'sess-s', 'm', 'completed', 1, 'a', 'req_s', 'site-a', 4, 9000, 10000, "
       "now() - interval '20 minutes', now() - interval '19 minutes')");
  Exec(db_,
       "INSERT INTO uppzy.incidents (kind, http_status, detail, api_key_fingerprint, opened_by, site_id) "
       "VALUES ('unauthorized', 401, 'HTTP 401', 'fedcba654321', 'w-1', 'site-b')");
  Exec(db_,
       "INSERT INTO uppzy.workers (id, host, pid, version, lease_ms, jobs_in_flight, breaker_state, "
       "heartbeat_at, sites) VALUES ('w-sites', 'h5', 5, 'v', 30000, 0, 'closed', now(), ARRAY['site-a'])");
  Dashboard d(db_);
  const Response r = d.Get("/api/overview");
  ASSERT_EQ(r.status, 200) << r.body;
  const json sites = r.Json()["sites"];
  ASSERT_EQ(sites.size(), 3u) << sites.dump();

  const json& def = sites[0];
  EXPECT_TRUE(def["site_id"].is_null());
  EXPECT_EQ(def["is_default"], true);
  EXPECT_EQ(def["queued"], 1);
  EXPECT_EQ(def["polling"], 1);
  EXPECT_EQ(def["served"], true) << "w-alive serves the default site";
  EXPECT_EQ(def["open_incidents"], 1);
  EXPECT_TRUE(def["paused_at"].is_null());

  const json& a = sites[1];
  EXPECT_EQ(a["site_id"], "site-a");
  EXPECT_EQ(a["is_default"], false);
  EXPECT_EQ(a["queued"], 1);
  EXPECT_EQ(a["retrying"], 0);
  EXPECT_EQ(a["submitting"], 0);
  EXPECT_EQ(a["polling"], 0);
  EXPECT_TRUE(a["oldest_queued_age_seconds"].is_number());
  EXPECT_EQ(a["served"], true);
  EXPECT_TRUE(a["paused_at"].is_null());
  EXPECT_TRUE(a["paused_reason"].is_null());
  EXPECT_EQ(a["open_incidents"], 0);
  EXPECT_EQ(a["last_hour"]["completed"], 1);
  EXPECT_EQ(a["last_hour"]["poll_timeouts"], 0);
  EXPECT_DOUBLE_EQ(a["last_hour"]["status_calls_per_completed"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(a["last_hour"]["seen_gap_p50_s"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(a["last_hour"]["seen_gap_p95_s"].get<double>(), 1.0);

  const json& b = sites[2];
  EXPECT_EQ(b["site_id"], "site-b");
  EXPECT_EQ(b["queued"], 0);
  EXPECT_TRUE(b["oldest_queued_age_seconds"].is_null());
  EXPECT_EQ(b["served"], false) << "no live worker holds site-b's key";
  EXPECT_TRUE(b["paused_at"].is_string());
  EXPECT_EQ(b["paused_reason"], "<b>plan</b> renewal");
  EXPECT_EQ(b["open_incidents"], 1);
  EXPECT_EQ(b["last_hour"]["completed"], 0);
  EXPECT_TRUE(b["last_hour"]["status_calls_per_completed"].is_null());

  // The served flags agree with the view the CLI and psql read.
  EXPECT_EQ(
      Query(db_,
            "SELECT string_agg(coalesce(site_id, '-') || '=' || served, ',' ORDER BY site_id NULLS FIRST) "
            "FROM uppzy.site_queues"),
      "-=true,site-a=true,site-b=false");
}

TEST_F(DashboardHttp, JobsListFiltersAndPagesNewestFirstWithoutGapsOrRepeats) {
  // 25 rows of one INSERT share created_at: the id breaks the tie.
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (session_id, message, job_key) SELECT 'sess-page', 'm', 'page-' || i "
       "FROM generate_series(1, 25) i");
  Dashboard d(db_);
  std::vector<long long> seen;
  std::string next;
  int pages = 0;
  do {
    const Response r =
        d.Get("/api/jobs?session_id=sess-page&limit=10" + (next.empty() ? "" : "&after=" + next));
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.Json();
    for (const auto& job : j["jobs"]) seen.push_back(job["id"]);
    next = j["next"].is_null() ? "" : j["next"].get<std::string>();
    ++pages;
  } while (!next.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i - 1], seen[i]) << "not newest first at " << i;

  auto ids = [&](const std::string& query) {
    const Response r = d.Get("/api/jobs?" + query);
    EXPECT_EQ(r.status, 200) << query << ": " << r.body;
    std::vector<long long> out;
    const json j = r.Json();
    for (const auto& job : j["jobs"]) out.push_back(job["id"]);
    return out;
  };
  EXPECT_EQ(ids("state=failed"), std::vector<long long>{failed_});
  EXPECT_EQ(ids("state=failed&error_kind=server_error"), std::vector<long long>{failed_});
  EXPECT_EQ(ids("error_kind=poll_timeout"), std::vector<long long>{});
  EXPECT_EQ(ids("job_key=key-done"), std::vector<long long>{completed_});
  EXPECT_EQ(ids("session_id=sess-b"), (std::vector<long long>{polling_, queued_}));
  EXPECT_EQ(ids("state=completed&since=6h&until=4h"), std::vector<long long>{completed_});
  EXPECT_EQ(ids("state=completed&since=1h"), std::vector<long long>{});
  EXPECT_EQ(ids("session_id=sess-a&until=2000-01-01"), std::vector<long long>{});
  const std::string today =
      Query(db_, "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '1 day', 'YYYY-MM-DD')");
  EXPECT_EQ(ids("job_key=key-failed&since=" + today), std::vector<long long>{failed_});
  EXPECT_EQ(ids("job_key=key-failed&since=" + today + "T00:00:00Z&until=2199-01-01T00:00:00%2B02:00"),
            std::vector<long long>{failed_});

  const json list = d.Get("/api/jobs?limit=1").Json();
  EXPECT_EQ(list["limit"], 1);
  EXPECT_TRUE(list["next"].is_string());
  const json row = d.Get("/api/jobs?job_key=key-failed").Json()["jobs"][0];
  EXPECT_EQ(row["state"], "failed");
  EXPECT_EQ(row["error_kind"], "server_error");
  EXPECT_EQ(row["last_http_status"], 503);
  EXPECT_EQ(row["attempts"], 3);
}

TEST_F(DashboardHttp, PagesAcrossEveryStateInTheSameOrderAsSql) {
  // 40 jobs in all seven states, created at interleaved times with ties (i / 2 seconds apart).
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, answer, error_kind, "
       "finished_at, created_at) SELECT 'sess-mix', 'm', st, 1, 'req', CASE WHEN st = 'completed' THEN 'a' "
       "END, "
       "CASE WHEN st = 'failed' THEN 'network' END, CASE WHEN st IN ('completed', 'failed', 'cancelled') "
       "THEN now() "
       "END, now() - (i / 2) * interval '1 second' FROM (SELECT i, (ARRAY['queued', 'submitting', 'polling', "
       "'retrying', 'completed', 'failed', 'cancelled'])[1 + i % 7] AS st FROM generate_series(1, 40) i) g");
  std::vector<long long> want;
  {
    const std::string ids = Query(db_,
                                  "SELECT string_agg(id::text, ',' ORDER BY created_at DESC, id DESC) FROM "
                                  "uppzy.chat_jobs WHERE session_id = 'sess-mix'");
    for (size_t pos = 0; pos < ids.size();) {
      const size_t comma = ids.find(',', pos);
      want.push_back(std::stoll(ids.substr(pos, comma - pos)));
      pos = comma == std::string::npos ? ids.size() : comma + 1;
    }
  }
  ASSERT_EQ(want.size(), 40u);
  Dashboard d(db_);
  std::vector<long long> seen;
  std::string next;
  for (int page = 0; page < 20; ++page) {
    const Response r =
        d.Get("/api/jobs?session_id=sess-mix&limit=3" + (next.empty() ? "" : "&after=" + next));
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.Json();
    for (const auto& job : j["jobs"]) seen.push_back(job["id"]);
    if (j["next"].is_null()) break;
    next = j["next"];
  }
  EXPECT_EQ(seen, want);
  // The same with a state and a time range.
  seen.clear();
  next.clear();
  for (int page = 0; page < 20; ++page) {
    const Response r = d.Get("/api/jobs?session_id=sess-mix&state=failed&since=1h&limit=2" +
                             (next.empty() ? "" : "&after=" + next));
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = r.Json();
    for (const auto& job : j["jobs"]) {
      EXPECT_EQ(job["state"], "failed");
      seen.push_back(job["id"]);
    }
    if (j["next"].is_null()) break;
    next = j["next"];
  }
  std::vector<long long> failed_only;
  for (long long id : want) {
    if (State(id) == "failed") failed_only.push_back(id);
  }
  EXPECT_EQ(seen, failed_only);
}

TEST_F(DashboardHttp, OneJobHasEveryColumnTheHistoryAndTheNotification) {
  Dashboard d(db_);
  const Response r = d.Get("/api/jobs/" + std::to_string(failed_));
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.Json();
  for (const char* key : {"id",
                          "job_key",
                          "session_id",
                          "response_language",
                          "state",
                          "priority",
                          "attempts",
                          "max_attempts",
                          "request_id",
                          "polls",
                          "error_kind",
                          "last_error",
                          "last_http_status",
                          "errors",
                          "metadata",
                          "result",
                          "run_at",
                          "created_at",
                          "updated_at",
                          "submitted_at",
                          "poll_deadline",
                          "finished_at",
                          "cancel_requested_at",
                          "locked_by",
                          "lease_expires_at"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["errors"].size(), 2u);
  EXPECT_EQ(j["errors"][0]["kind"], "server_error");
  EXPECT_EQ(j["notification"]["channel"], "uppzy_chat_jobs");
  EXPECT_EQ(j["notification"]["payload"],
            (json{{"kind", "chat_job"}, {"id", failed_}, {"job_key", "key-failed"}, {"state", "failed"}}));
  EXPECT_EQ(j["actions"], (json{{"retry", true}, {"cancel", false}}));
  const json q = d.Get("/api/jobs/" + std::to_string(queued_)).Json();
  EXPECT_TRUE(q["notification"].is_null());
  EXPECT_EQ(q["actions"], (json{{"retry", false}, {"cancel", true}}));
}

TEST_F(DashboardHttp, BadInputIsAClearJsonErrorNeverA500) {
  Dashboard d(db_, {{"UPPZY_DASHBOARD_TOKEN", kToken}});
  const std::vector<std::pair<std::string, long>> gets = {
      {"/api/jobs?state=bogus", 400},
      {"/api/jobs?state=", 200},
      {"/api/jobs?error_kind=teapot", 400},
      {"/api/jobs?error_kind=none", 400},
      {"/api/jobs?after=garbage!", 400},
      {"/api/jobs?after=djE6", 400},                                // "v1:" and nothing else
      {"/api/jobs?after=eDE6MTIzOjQ1", 400},                        // "x1:123:45": not our prefix
      {"/api/jobs?after=djE6MTIzOi0x", 400},                        // "v1:123:-1"
      {"/api/jobs?after=djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk6MQ", 400},  // created_us overflows
      {"/api/jobs?limit=0", 400},
      {"/api/jobs?limit=501", 400},
      {"/api/jobs?limit=ten", 400},
      {"/api/jobs?limit=-5", 400},
      {"/api/jobs?since=yesterday", 400},
      {"/api/jobs?since=2024-13-01", 400},
      {"/api/jobs?since=2024-02-30", 400},
      {"/api/jobs?until=2024-05-01T25:00:00Z", 400},
      {"/api/jobs?since=1h&until=2h", 400},
      {"/api/jobs?since=1969-12-31", 400},
      {"/api/jobs?session_id=" + std::string(300, 'x'), 400},
      {"/api/jobs?stat=failed", 400},
      {"/api/jobs?state=failed&state=queued", 400},
      {"/api/jobs/abc", 400},
      {"/api/jobs/0", 400},
      {"/api/jobs/-1", 400},
      {"/api/jobs/99999999999999999999", 400},
      {"/api/jobs/987654321", 404},
      {"/api/nothing", 404},
  };
  for (const auto& [path, status] : gets) {
    const Response r = d.Get(path, {Bearer()});
    if (status == 200) {
      EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    } else {
      ExpectJsonError(r, status, path);
    }
  }
  const std::string retry = "/api/jobs/retry";
  const std::vector<std::tuple<std::string, std::string, long>> posts = {
      {retry, "not json", 400},
      {retry, "[1, 2]", 400},
      {retry, "{}", 400},
      {retry, R"({"ids": []})", 400},
      {retry, R"({"ids": ["1"]})", 400},
      {retry, R"({"ids": [0]})", 400},
      {retry, R"({"ids": [1.5]})", 400},
      {retry, R"({"ids": 1})", 400},
      {retry, R"({"ids": [1], "filter": {"state": "failed"}})", 400},
      {retry, R"({"idz": [1]})", 400},
      {retry, R"({"filter": {}})", 400},
      {retry, R"({"filter": "failed"})", 400},
      {retry, R"({"filter": {"state": "bogus"}})", 400},
      {retry, R"({"filter": {"state": 3}})", 400},
      {retry, R"({"filter": {"colour": "red"}})", 400},
      {retry, R"({"filter": {"since": "soon"}})", 400},
      {"/api/jobs/cancel", R"({"ids": [-4]})", 400},
      {"/api/jobs/987654321/retry", "{}", 404},
      {"/api/jobs/987654321/cancel", "{}", 404},
      {"/api/jobs/x/retry", "{}", 400},
      {"/api/jobs/" + std::to_string(queued_) + "/retry", "{}", 409},
      {"/api/jobs/" + std::to_string(completed_) + "/cancel", "{}", 409},
      {"/api/incidents/987654321/resolve", "{}", 404},
      {"/api/incidents/abc/resolve", "{}", 400},
      {"/api/nothing", "{}", 404},
  };
  for (const auto& [path, body, status] : posts) {
    ExpectJsonError(d.Post(path, body, {Bearer()}), status, path + " " + body);
  }
  ASSERT_EQ(d.Post("/api/incidents/" + std::to_string(incident_) + "/resolve", "{}", {Bearer()}).status, 200);
  ExpectJsonError(d.Post("/api/incidents/" + std::to_string(incident_) + "/resolve", "{}", {Bearer()}), 409,
                  "resolving twice");
  EXPECT_TRUE(d.process().Running()) << d.process().Log();
  EXPECT_EQ(State(queued_), "queued");
  EXPECT_EQ(State(completed_), "completed");
}

TEST_F(DashboardHttp, ReadOnlyModeRefusesEveryAction) {
  Dashboard d(db_);
  const std::vector<std::pair<std::string, std::string>> actions = {
      {"/api/jobs/" + std::to_string(failed_) + "/retry", "{}"},
      {"/api/jobs/" + std::to_string(queued_) + "/cancel", "{}"},
      {"/api/jobs/retry", "{\"ids\": [" + std::to_string(failed_) + "]}"},
      {"/api/jobs/cancel", R"({"filter": {"state": "queued"}})"},
      {"/api/incidents/" + std::to_string(incident_) + "/resolve", "{}"},
  };
  for (const auto& [path, body] : actions) {
    const Response r = d.Post(path, body, {Bearer()});  // a token is no use when none was configured
    ExpectJsonError(r, 403, path);
    EXPECT_NE(r.body.find("UPPZY_DASHBOARD_TOKEN"), std::string::npos) << r.body;
  }
  EXPECT_EQ(State(failed_), "failed");
  EXPECT_EQ(State(queued_), "queued");
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL"), 1);
  // GETs still work, and /login sends you home.
  EXPECT_EQ(d.Get("/api/overview").status, 200);
  EXPECT_EQ(d.Get("/login").status, 303);
  // Only loopback Host names are answered (DNS rebinding).
  ExpectJsonError(d.Get("/api/overview", {"Host: attacker.example:8080"}), 403, "foreign Host");
  EXPECT_EQ(d.Get("/api/overview", {"Host: localhost:8080"}).status, 200);
}

TEST_F(DashboardHttp, TokenLoginSetsAStrictHttpOnlyCookieAndActionsNeedTheCsrfToken) {
  Dashboard d(db_, {{"UPPZY_DASHBOARD_TOKEN", kToken}});
  ExpectJsonError(d.Get("/api/overview"), 401, "no session");
  ExpectJsonError(d.Get("/api/jobs"), 401, "no session");
  EXPECT_EQ(d.Get("/healthz").status, 200);
  EXPECT_EQ(d.Get("/static/app.js").status, 200);
  const Response home = d.Get("/");
  EXPECT_EQ(home.status, 303);
  EXPECT_EQ(home.Header("location"), "/login");
  const Response form = d.Get("/login");
  EXPECT_EQ(form.status, 200);
  EXPECT_NE(form.body.find("name=\"token\""), std::string::npos);

  const std::vector<std::string> form_type = {"Content-Type: application/x-www-form-urlencoded"};
  const Response wrong = d.Post("/login", "token=not-the-token-at-all", form_type);
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(wrong.Header("set-cookie"), "");
  const Response login = d.Post("/login", std::string("token=") + kToken, form_type);
  ASSERT_EQ(login.status, 303) << login.body;
  const std::string cookie = login.Header("set-cookie");
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos) << cookie;
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos) << cookie;
  const std::string session = "Cookie: " + cookie.substr(0, cookie.find(';'));

  const Response page = d.Get("/", {session});
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.body.find("mode-banner"), std::string::npos) << "no read-only banner when signed in";
  const std::string marker = "name=\"csrf-token\" content=\"";
  const auto at = page.body.find(marker);
  ASSERT_NE(at, std::string::npos);
  const std::string csrf = page.body.substr(at + marker.size(), 64);
  ASSERT_EQ(csrf.find('"'), std::string::npos);
  EXPECT_EQ(d.Get("/api/overview", {session}).status, 200);

  const std::string retry = "/api/jobs/" + std::to_string(failed_) + "/retry";
  ExpectJsonError(d.Post(retry, "{}", {session}), 403, "no CSRF token");
  ExpectJsonError(d.Post(retry, "{}", {session, "X-CSRF-Token: " + std::string(64, 'a')}), 403,
                  "wrong CSRF token");
  ExpectJsonError(d.Post(retry, "{}", {"X-CSRF-Token: " + csrf}), 401, "CSRF token without the session");
  ExpectJsonError(d.Post(retry, "{}", {session, "X-CSRF-Token: " + csrf, "Origin: http://attacker.example"}),
                  403, "cross-origin");
  EXPECT_EQ(State(failed_), "failed");
  const Response ok = d.Post(retry, "{}", {session, "X-CSRF-Token: " + csrf});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.Json()["state"], "queued");
  EXPECT_EQ(State(failed_), "queued");

  // GET never changes anything, whatever it is asked.
  EXPECT_EQ(d.Get("/api/jobs/" + std::to_string(queued_) + "/cancel", {session}).status, 404);
  EXPECT_EQ(State(queued_), "queued");

  // Scripts: the token as a bearer, no cookie and no CSRF token.
  EXPECT_EQ(d.Post("/api/jobs/" + std::to_string(queued_) + "/cancel", "{}", {Bearer()}).status, 200);
  ExpectJsonError(d.Post("/api/jobs/retry", "{}", {"Authorization: Bearer wrong-token-wrong-token"}), 401,
                  "wrong bearer");

  ASSERT_EQ(d.Post("/logout", "{}", {session, "X-CSRF-Token: " + csrf}).status, 200);
  ExpectJsonError(d.Get("/api/overview", {session}), 401, "after sign-out");
}

TEST_F(DashboardHttp, ActionsGoThroughTheOperatorFunctionsAndLeaveOperatorEvents) {
  Dashboard d(db_, {{"UPPZY_DASHBOARD_TOKEN", kToken}});
  // One job.
  Response r = d.Post("/api/jobs/" + std::to_string(failed_) + "/retry", "{}", {Bearer()});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(State(failed_), "queued");
  EXPECT_EQ(
      Query(db_, "SELECT errors -> -1 ->> 'kind' FROM uppzy.chat_jobs WHERE id = " + std::to_string(failed_)),
      "operator_retry");
  const json history = d.Get("/api/jobs/" + std::to_string(failed_), {Bearer()}).Json()["errors"];
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[2]["kind"], "operator_retry");

  // All that match a filter.
  Exec(db_,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, error_kind, finished_at) SELECT "
       "'sess-bulk', "
       "'m', 'failed', 1, CASE WHEN i <= 4 THEN 'network' ELSE 'bad_request' END, now() FROM "
       "generate_series(1, 6) i");
  r = d.Post("/api/jobs/retry", R"({"filter": {"state": "failed", "error_kind": "network"}})", {Bearer()});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["requeued"], 4);
  EXPECT_EQ(r.Json()["capped"], false);
  EXPECT_EQ(
      QueryInt(db_,
               "SELECT count(*) FROM uppzy.chat_jobs WHERE session_id = 'sess-bulk' AND state = 'queued'"),
      4);

  // A list of ids: the ones that do not apply are left alone and not counted.
  r = d.Post("/api/jobs/cancel",
             "{\"ids\": [" + std::to_string(queued_) + ", " + std::to_string(polling_) + ", " +
                 std::to_string(completed_) + ", 987654321]}",
             {Bearer()});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["requested"], 4);
  EXPECT_EQ(r.Json()["cancelled"], 2);
  EXPECT_EQ(State(queued_), "cancelled");
  EXPECT_EQ(
      Query(db_, "SELECT errors -> -1 ->> 'kind' FROM uppzy.chat_jobs WHERE id = " + std::to_string(queued_)),
      "cancelled");
  EXPECT_EQ(State(polling_), "polling");  // its worker finishes it
  EXPECT_EQ(
      QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE cancel_requested_at IS NOT NULL AND id = " +
                        std::to_string(polling_)),
      1);
  EXPECT_EQ(State(completed_), "completed");
  const json polling = d.Get("/api/jobs/" + std::to_string(polling_), {Bearer()}).Json();
  EXPECT_EQ(polling["actions"]["cancel"], false) << "cancellation already requested";
  EXPECT_TRUE(polling["cancel_requested_at"].is_string());

  r = d.Post("/api/jobs/cancel", R"({"filter": {"session_id": "sess-bulk"}})", {Bearer()});
  EXPECT_EQ(r.Json()["cancelled"], 4);

  // Incidents.
  r = d.Post("/api/incidents/" + std::to_string(incident_) + "/resolve", "{}", {Bearer()});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL"), 0);
  EXPECT_EQ(d.Get("/api/overview", {Bearer()}).Json()["incidents"].size(), 0u)
      << "the overview cache is refreshed";
}

TEST_F(DashboardHttp, JsonNeverCarriesMessageOrAnswerWithoutShowText) {
  Dashboard d(db_);
  for (const std::string& path : std::vector<std::string>{
           "/api/overview", "/api/jobs", "/api/jobs?state=completed",
           "/api/jobs/" + std::to_string(completed_), "/api/jobs/" + std::to_string(failed_), "/", "/jobs",
           "/jobs/" + std::to_string(completed_)}) {
    const Response r = d.Get(path);
    ASSERT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.body.find(kSentinelMessage), std::string::npos) << path;
    EXPECT_EQ(r.body.find(kSentinelAnswer), std::string::npos) << path;
    if (path.rfind("/api/jobs/", 0) == 0) {
      const json j = r.Json();
      EXPECT_FALSE(j.contains("message")) << path;
      EXPECT_FALSE(j.contains("answer")) << path;
    }
  }
  Dashboard shown(db_, {}, {"--show-text"});
  const json j = shown.Get("/api/jobs/" + std::to_string(completed_)).Json();
  EXPECT_EQ(j["message"], kSentinelMessage);
  EXPECT_EQ(j["answer"], kSentinelAnswer);
  // Listings never carry the text, even with --show-text.
  EXPECT_EQ(shown.Get("/api/jobs").body.find(kSentinelMessage), std::string::npos);
}

TEST_F(DashboardHttp, RunsAsALoginWithOnlyTheOperatorRole) {
  OpsStore(db_).RolesApply();
  std::random_device rd;
  const std::string login = "t_dash_" + std::to_string(getpid()) + "_" + std::to_string(rd() % 1000000);
  Exec(test::AdminUrl(), "CREATE ROLE " + login + " LOGIN IN ROLE uppzy_operator");
  struct DropRole {
    std::string login;
    ~DropRole() {
      try {
        Exec(test::AdminUrl(), "DROP ROLE IF EXISTS " + login);
      } catch (...) {
      }
    }
  } drop{login};
  const std::string as_operator = std::string(db_).replace(db_.find("postgres@"), 8, login);
  {
    Dashboard d(as_operator, {{"UPPZY_DASHBOARD_TOKEN", kToken}}, {"--show-text"});
    EXPECT_EQ(d.Get("/api/overview", {Bearer()}).status, 200) << d.Get("/api/overview", {Bearer()}).body;
    EXPECT_EQ(d.Get("/api/jobs?state=failed&since=1h", {Bearer()}).status, 200);
    const Response job = d.Get("/api/jobs/" + std::to_string(completed_), {Bearer()});
    ASSERT_EQ(job.status, 200) << job.body;
    EXPECT_TRUE(job.Json()["message"].is_null()) << "uppzy_operator may not read the text";
    EXPECT_TRUE(job.Json()["text_error"].is_string());
    EXPECT_EQ(job.body.find(kSentinelAnswer), std::string::npos);
    EXPECT_EQ(d.Post("/api/jobs/" + std::to_string(failed_) + "/retry", "{}", {Bearer()}).status, 200);
    EXPECT_EQ(d.Post("/api/jobs/cancel", R"({"filter": {"session_id": "sess-b"}})", {Bearer()}).status, 200);
    EXPECT_EQ(d.Post("/api/incidents/" + std::to_string(incident_) + "/resolve", "{}", {Bearer()}).status,
              200);
  }
  EXPECT_EQ(State(failed_), "queued");
  EXPECT_EQ(State(queued_), "cancelled");
}

TEST_F(DashboardHttp, StartUpRefusesANonLoopbackAddressWithoutAToken) {
  std::string out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "dashboard", "--listen", "0.0.0.0:0"},
                             {{"DATABASE_URL", db_}}, &out),
            2);
  EXPECT_NE(out.find("UPPZY_DASHBOARD_TOKEN"), std::string::npos) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "dashboard"},
                             {{"DATABASE_URL", db_}, {"UPPZY_DASHBOARD_ADDR", "0.0.0.0:0"}}, &out),
            2);
  EXPECT_NE(out.find("UPPZY_DASHBOARD_TOKEN"), std::string::npos) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "dashboard", "--listen", "127.0.0.1:0"},
                             {{"DATABASE_URL", db_}, {"UPPZY_DASHBOARD_TOKEN", "short"}}, &out),
            2);
  EXPECT_NE(out.find("at least 16"), std::string::npos) << out;
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "dashboard", "--listen", "nonsense"}, {{"DATABASE_URL", db_}},
                             &out),
            2);
  EXPECT_EQ(test::RunCommand({UPPZY_WORKER_BIN, "dashboard"}, {}, &out), 2);
  EXPECT_NE(out.find("DATABASE_URL"), std::string::npos) << out;
  // With a token, any address is allowed.
  Dashboard d(db_, {{"UPPZY_DASHBOARD_TOKEN", kToken}}, {"--listen", "0.0.0.0:0"});
  EXPECT_EQ(d.Get("/healthz").status, 200);
}

TEST_F(DashboardHttp, StopsOnSigterm) {
  Dashboard d(db_);
  d.process().Signal(SIGTERM);
  EXPECT_EQ(d.process().Wait(5s), 0) << d.process().Log();
}

}  // namespace
}  // namespace uppzy
