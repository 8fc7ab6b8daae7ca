// The mock's sites, rate limits and answer-time records over real HTTP on 127.0.0.1 (issue 10 and 11;
// the contract is in src/mock/mock_server.h). Counts are compared with margins derived from the time
// the test measured, never with fixed timings, so a loaded machine only widens them.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <strings.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "mock/mock_server.h"

namespace uppzy::mock {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// One keep-alive connection to the mock, reused for every call.
class Client {
 public:
  struct Reply {
    long status = 0;
    std::string body;
    std::optional<long> retry_after;
    json Json() const { return json::parse(body); }
  };

  explicit Client(int port) : base_("http://127.0.0.1:" + std::to_string(port)), easy_(curl_easy_init()) {}
  ~Client() { curl_easy_cleanup(easy_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Reply Call(const std::string& method, const std::string& path, const std::string& body,
             std::optional<std::string> key) {
    Reply reply;
    std::string url = base_ + path;
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    if (key) headers = curl_slist_append(headers, ("X-API-Key: " + *key).c_str());
    curl_easy_reset(easy_);
    curl_easy_setopt(easy_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy_, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method == "POST") curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, &Client::OnBody);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(easy_, CURLOPT_HEADERFUNCTION, &Client::OnHeader);
    curl_easy_setopt(easy_, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(easy_, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(easy_, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(easy_) == CURLE_OK) curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(headers);
    return reply;
  }

  Reply Submit(const std::string& site, const std::string& key, const std::string& message = "hi") {
    return Call("POST", "/api/v1/m2m/sites/" + site + "/chat/async",
                json{{"session_id", "s"}, {"message", message}}.dump(), key);
  }
  Reply Status(const std::string& site, const std::string& key, const std::string& id) {
    return Call("GET", "/api/v1/m2m/sites/" + site + "/chat/requests/" + id, "", key);
  }
  json Stats() { return Call("GET", "/_mock/stats", "", std::nullopt).Json(); }

 private:
  static size_t OnBody(char* data, size_t size, size_t n, void* user) {
    static_cast<Reply*>(user)->body.append(data, size * n);
    return size * n;
  }
  static size_t OnHeader(char* data, size_t size, size_t n, void* user) {
    std::string line(data, size * n);
    constexpr std::string_view kName = "retry-after:";
    if (line.size() > kName.size() && strncasecmp(line.c_str(), kName.data(), kName.size()) == 0) {
      static_cast<Reply*>(user)->retry_after = std::stol(line.substr(kName.size()));
    }
    return size * n;
  }

  std::string base_;
  CURL* easy_;
};

const bool kCurlReady = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;

class MockSitesHttpTest : public ::testing::Test {
 protected:
  void Start(MockOptions options) {
    ASSERT_TRUE(kCurlReady);
    options.seed = 42;
    server_ = std::make_unique<MockServer>(std::move(options));
    server_->Start();
    client_ = std::make_unique<Client>(server_->port());
  }
  std::string Accepted(const std::string& site, const std::string& key, const std::string& message = "hi") {
    Client::Reply r = client_->Submit(site, key, message);
    EXPECT_EQ(r.status, 202) << r.body;
    return r.status == 202 ? r.Json().at("request_id").get<std::string>() : "";
  }

  std::unique_ptr<MockServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(MockSitesHttpTest, EachSiteHasItsOwnKeyAndAWrongKeyIs401ForThatSiteOnly) {
  Start({.sites = {{"A", "key-a"}, {"B", "key-b"}}});
  for (int i = 0; i < 5; ++i) {
    Client::Reply wrong = client_->Submit("A", "key-b");
    EXPECT_EQ(wrong.status, 401) << wrong.body;
    EXPECT_EQ(wrong.Json()["error"], "invalid api key");
  }
  EXPECT_EQ(client_->Call("GET", "/api/v1/m2m/sites/A/chat/requests/x", "", std::nullopt).status, 401);
  std::string id_b = Accepted("B", "key-b");
  EXPECT_EQ(client_->Status("B", "key-b", id_b).status, 200) << "B keeps answering";
  std::string id_a = Accepted("A", "key-a");
  EXPECT_EQ(client_->Status("A", "key-a", id_a).status, 200);
  EXPECT_EQ(client_->Submit("B", "mock-key").status, 401) << "--api-key is unused with --site";

  json stats = client_->Stats();
  EXPECT_EQ(stats["unauthorized"], 7);
  EXPECT_EQ(stats["sites"]["A"]["unauthorized"], 6);
  EXPECT_EQ(stats["sites"]["A"]["requests"], 2);
  EXPECT_EQ(stats["sites"]["B"]["unauthorized"], 1);
  EXPECT_EQ(stats["sites"]["B"]["requests"], 2);
}

TEST_F(MockSitesHttpTest, AnUnlistedSiteIs404AndARequestIdOnlyExistsUnderItsSite) {
  Start({.sites = {{"A", "key-a"}, {"B", "key-b"}}});
  Client::Reply unknown = client_->Submit("C", "key-a");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(unknown.Json()["error"], "site not found");
  EXPECT_EQ(client_->Submit("C", "nope").status, 404) << "whatever the key";

  std::string id = Accepted("A", "key-a");
  EXPECT_EQ(client_->Status("A", "key-a", id).status, 200);
  Client::Reply elsewhere = client_->Status("B", "key-b", id);
  EXPECT_EQ(elsewhere.status, 404) << elsewhere.body;
  EXPECT_EQ(elsewhere.Json()["error"], "request not found");
  std::string feedback = json{{"session_id", "s"}, {"request_id", id}, {"feedback", "good"}}.dump();
  EXPECT_EQ(client_->Call("POST", "/api/v1/m2m/sites/B/chat/feedback", feedback, "key-b").status, 404);
  EXPECT_EQ(client_->Stats()["sites_total"]["unknown_site"], 2);
}

TEST_F(MockSitesHttpTest, WithoutSitesTheOneKeyServesAnySiteButIdsStayInTheirSite) {
  Start({.api_key = "k"});
  std::string id = Accepted("one", "k");
  EXPECT_EQ(client_->Status("one", "k", id).status, 200);
  EXPECT_EQ(client_->Status("two", "k", id).status, 404);
  EXPECT_EQ(client_->Submit("two", "k").status, 202);
  EXPECT_EQ(client_->Submit("two", "x").status, 401);
}

TEST_F(MockSitesHttpTest, RateLimitAcceptsTheBurstPlusTheRateAndAnswersTheRest429) {
  const double rate = 20;
  const int burst = 10;
  Start({.sites = {{"A", "ka"}, {"B", "kb"}}, .rate_limits = {{"A", RateLimit{rate, burst}}}});
  std::string id = Accepted("A", "ka");  // one token
  const int kCalls = 300;
  int accepted = 0, limited = 0;
  auto start = Clock::now();
  for (int i = 0; i < kCalls; ++i) {
    // Every /api/v1 call of the site counts: submits and status calls alike.
    Client::Reply r = i % 2 == 0 ? client_->Submit("A", "ka") : client_->Status("A", "ka", id);
    if (r.status == 429) {
      ++limited;
      ASSERT_TRUE(r.retry_after.has_value()) << "429 without Retry-After";
      EXPECT_GE(*r.retry_after, 1);
      EXPECT_EQ(r.Json()["error"], "rate limit exceeded");
    } else {
      ++accepted;
      EXPECT_TRUE(r.status == 200 || r.status == 202) << r.status << " " << r.body;
    }
  }
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(accepted + limited, kCalls);
  // The first call took one of the burst; the calls then get the rest of the burst plus the refill.
  EXPECT_GE(accepted, burst - 1);
  EXPECT_LE(accepted, burst - 1 + static_cast<int>(rate * elapsed_s) + 1) << "elapsed " << elapsed_s << " s";
  EXPECT_GT(limited, 0) << "300 calls never fit in " << elapsed_s << " s at this rate";
  EXPECT_EQ(client_->Submit("B", "kb").status, 202) << "B has no limit and A's budget is A's";

  json stats = client_->Stats();
  const json& a = stats["sites"]["A"];
  EXPECT_EQ(a["requests"], accepted + 1);
  EXPECT_EQ(a["rate_limited"], limited);
  EXPECT_EQ(a["rate_limit"]["burst"], burst);
  const double bound = rate * 1.1 + burst;
  uint64_t sum = 0;
  for (const json& n : a["per_second"]) {
    EXPECT_LE(n.get<double>(), bound) << a["per_second"].dump();
    sum += n.get<uint64_t>();
  }
  EXPECT_EQ(sum, a["requests"].get<uint64_t>());
  EXPECT_LE(a["max_per_second"].get<double>(), bound);
  EXPECT_LE(a["p99_per_second"], a["max_per_second"]);
  EXPECT_EQ(stats["sites_total"]["rate_limited"], limited);
  EXPECT_EQ(stats["requests_total"], kCalls + 2);
}

TEST_F(MockSitesHttpTest, RateLimitWithoutSitesAppliesToTheNamedSite) {
  Start({.rate_limits = {{"slow", RateLimit{.per_second = 0.1, .burst = 2}}}});
  EXPECT_EQ(client_->Submit("slow", "mock-key").status, 202);
  EXPECT_EQ(client_->Submit("slow", "mock-key").status, 202);
  Client::Reply r = client_->Submit("slow", "mock-key");
  EXPECT_EQ(r.status, 429);
  ASSERT_TRUE(r.retry_after.has_value());
  EXPECT_GE(*r.retry_after, 9) << "one token every 10 s";
  EXPECT_LE(*r.retry_after, 10);
  EXPECT_EQ(client_->Submit("slow", "wrong").status, 401) << "the key comes first and takes no token";
  EXPECT_EQ(client_->Submit("other", "mock-key").status, 202);
  client_->Call("POST", "/_mock/reset", "", std::nullopt);
  EXPECT_EQ(client_->Submit("slow", "mock-key").status, 202) << "a reset refills the buckets";
}

TEST_F(MockSitesHttpTest, ReadyDistDrawsEachAnswerTimeAndRequestsRecordsReadyAndFirstSeen) {
  Start({.ready_dist = ReadyDist{.kind = ReadyDist::Kind::kUniform, .min_ms = 150, .max_ms = 400}});
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(Accepted("A", "mock-key"));
  std::string scripted = Accepted("A", "mock-key", "mock.ready=0");
  std::string forced = Accepted("A", "mock-key", "mock.ready=60000 mock.poll=processing,completed");

  // Poll everything until done (each at most ~10 s on a loaded machine).
  auto deadline = Clock::now() + std::chrono::seconds(20);
  std::vector<std::string> all = ids;
  all.push_back(scripted);
  all.push_back(forced);
  for (const std::string& id : all) {
    while (Clock::now() < deadline) {
      Client::Reply r = client_->Status("A", "mock-key", id);
      ASSERT_EQ(r.status, 200) << r.body;
      if (r.Json()["status"] == "completed") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_EQ(client_->Status("A", "mock-key", ids[0]).status, 200) << "a call after completion still counts";

  Client::Reply listed = client_->Call("GET", "/_mock/requests", "", std::nullopt);
  ASSERT_EQ(listed.status, 200);
  json records = listed.Json();
  ASSERT_EQ(records.size(), all.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const json& r = records[i];
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(r["request_id"], all[i]) << "in submission order";
    EXPECT_EQ(r["site"], "A");
    EXPECT_EQ(r["outcome"], "completed");
    ASSERT_TRUE(r["first_seen_ms"].is_number());
    const int64_t submitted = r["submitted_ms"], ready = r["ready_ms"], seen = r["first_seen_ms"];
    EXPECT_GE(seen, ready) << "the completed answer is seen only once ready";
    if (i < ids.size()) {
      EXPECT_GE(ready - submitted, 150);
      EXPECT_LE(ready - submitted, 400);
    }
    EXPECT_GE(r["status_calls"].get<int>(), i == 0 ? 2 : 1);
  }
  EXPECT_EQ(records[8]["ready_ms"], records[8]["submitted_ms"]) << "mock.ready=0 wins over the draw";
  EXPECT_EQ(records[9]["status_calls"], 2);
  EXPECT_EQ(records[9]["ready_ms"], records[9]["first_seen_ms"]) << "a poll script completed it early";

  json answers = client_->Stats()["answers"];
  EXPECT_EQ(answers["records"], all.size());
  EXPECT_EQ(answers["completed"], all.size());
  EXPECT_GE(answers["ready_to_seen_max_ms"], answers["ready_to_seen_p95_ms"]);
  EXPECT_GE(answers["ready_to_seen_p95_ms"], answers["ready_to_seen_p50_ms"]);
  EXPECT_GE(answers["status_calls_per_completed"].get<double>(), 1.0);

  client_->Call("POST", "/_mock/reset", "", std::nullopt);
  EXPECT_EQ(client_->Call("GET", "/_mock/requests", "", std::nullopt).body, "[]");
  EXPECT_EQ(client_->Call("POST", "/_mock/requests", "", std::nullopt).status, 405);
}

TEST(MockSitesStartTest, BadSiteOptionsAreRefusedAtStart) {
  auto refused = [](MockOptions o) {
    MockServer server(std::move(o));
    EXPECT_THROW(server.Start(), std::invalid_argument);
  };
  refused({.sites = {{"A", "k"}, {"A", "j"}}});
  refused({.sites = {{"A/b", "k"}}});
  refused({.sites = {{"A", ""}}});
  refused({.sites = {{"A", "k"}}, .rate_limits = {{"B", RateLimit{1, 1}}}});
  refused({.rate_limits = {{"B", RateLimit{0, 1}}}});
  refused({.rate_limits = {{"B", RateLimit{1, 0}}}});
  refused({.ready_dist = ReadyDist{.kind = ReadyDist::Kind::kUniform, .min_ms = 5, .max_ms = 4}});
  refused({.ready_dist = ReadyDist{.kind = ReadyDist::Kind::kLognormal, .median_ms = 0, .sigma = 1}});
}

}  // namespace
}  // namespace uppzy::mock
