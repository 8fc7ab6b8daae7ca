// UppzyClient against a real HTTP server on 127.0.0.1 (cpp-httplib, scripted per test).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/wait_for.h"
#include "uppzy/uppzy_client.h"

namespace uppzy {
namespace {

using json = nlohmann::json;
using std::chrono::steady_clock;

// An in-process server: register handlers on server(), then Start(). Declare it before the client
// so the client (and its keep-alive connections) goes first.
class TestServer {
 public:
  TestServer() {
    server_.new_task_queue = [] { return new httplib::ThreadPool(32); };
    server_.set_tcp_nodelay(true);
    server_.set_keep_alive_max_count(100000);
    server_.set_keep_alive_timeout(1);
  }
  ~TestServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  httplib::Server& server() { return server_; }

  void Start() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    ASSERT_TRUE(test::WaitFor([this] { return server_.is_running(); }, std::chrono::seconds(5),
                              std::chrono::milliseconds(1)));
  }

  // With a trailing slash on purpose: the client strips it.
  std::string BaseUrl() const { return "http://127.0.0.1:" + std::to_string(port_) + "/api/v1/"; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

UpstreamConfig Config(const std::string& base_url) {
  UpstreamConfig c;
  c.base_url = base_url;
  c.api_key = "test-key-123";
  c.connect_timeout_ms = 1000;
  c.total_timeout_ms = 3000;
  c.max_connections = 4;
  return c;
}

// Performs until `n` completions arrived or `timeout` passed.
std::vector<Completion> RunUntil(UppzyClient& client, size_t n, std::chrono::milliseconds timeout) {
  std::vector<Completion> out;
  const auto deadline = steady_clock::now() + timeout;
  while (out.size() < n && steady_clock::now() < deadline) client.Perform(50, &out);
  return out;
}

std::map<uint64_t, Outcome> ByTag(const std::vector<Completion>& done) {
  std::map<uint64_t, Outcome> m;
  for (const Completion& c : done) m[c.tag] = c.outcome;
  return m;
}

long MaxRssKb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

long long ElapsedMs(steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - since).count();
}

struct Seen {
  std::mutex mu;
  std::vector<httplib::Request> requests;
  void Add(const httplib::Request& r) {
    std::lock_guard<std::mutex> lock(mu);
    requests.push_back(r);
  }
};

TEST(UppzyClient, SubmitSendsHeadersAndJsonBody) {
  TestServer ts;
  Seen seen;
  ts.server().Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    seen.Add(req);
    res.status = 202;
    res.set_content(R"({"session_id":"s-1","request_id":"req-1","status":"queued"})", "application/json");
  });
  ts.Start();
  UppzyClient client(Config(ts.BaseUrl()));

  const std::string message = "He said \"hi\"\n\ttabs, \\ slashes, \xE2\x82\xAC and <tags>";
  client.StartSubmit(7, "site 1/x", 42, 2, "s-1", message, "pt-BR");
  EXPECT_EQ(client.InFlight(), 1u);
  std::vector<Completion> done = RunUntil(client, 1, std::chrono::seconds(5));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(client.InFlight(), 0u);
  EXPECT_EQ(done[0].tag, 7u);
  EXPECT_EQ(done[0].kind, RequestKind::kSubmit);
  const Outcome& o = done[0].outcome;
  EXPECT_EQ(o.kind, OutcomeKind::kAccepted) << o.error;
  EXPECT_EQ(o.request_id, "req-1");
  EXPECT_EQ(o.http_status, 202);
  EXPECT_GE(o.duration.count(), 0);
  EXPECT_LT(o.duration.count(), 5000);

  std::lock_guard<std::mutex> lock(seen.mu);  // the server's thread wrote it
  ASSERT_EQ(seen.requests.size(), 1u);
  const httplib::Request& req = seen.requests[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.version, "HTTP/1.1");
  EXPECT_EQ(req.target, "/api/v1/m2m/sites/site%201%2Fx/chat/async");
  EXPECT_EQ(req.get_header_value("X-API-Key"), "test-key-123");
  EXPECT_EQ(req.get_header_value("Idempotency-Key"), "42-2");
  EXPECT_EQ(req.get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(req.get_header_value("Accept"), "application/json");
  EXPECT_FALSE(req.has_header("Expect"));
  json body = json::parse(req.body);
  EXPECT_EQ(body, json({{"session_id", "s-1"}, {"message", message}, {"response_language", "pt-BR"}}));
}

TEST(UppzyClient, StatusMapsCompletedFailedAndInProgress) {
  TestServer ts;
  Seen seen;
  ts.server().Get(".*", [&](const httplib::Request& req, httplib::Response& res) {
    seen.Add(req);
    const std::string base = "/api/v1/m2m/sites/site-1/chat/requests/";
    if (req.target == base + "r%2F1") {
      res.set_content(R"({"session_id":"s","request_id":"r/1","status":"completed","answer":"Forty-two.",)"
                      R"("confidence_level":"high","confidence_score":0.93})",
                      "application/json");
    } else if (req.target == base + "r2") {
      res.set_content(R"({"request_id":"r2","status":"failed","error":"model overloaded"})",
                      "application/json");
    } else if (req.target == base + "r3") {
      res.set_content(R"({"request_id":"r3","status":"processing"})", "application/json");
    } else {
      res.status = 404;
      res.set_content(R"({"error":"no such request"})", "application/json");
    }
  });
  ts.Start();
  UppzyClient client(Config(ts.BaseUrl()));
  client.StartStatus(1, "site-1", "r/1");
  client.StartStatus(2, "site-1", "r2");
  client.StartStatus(3, "site-1", "r3");
  client.StartStatus(4, "site-1", "nope");
  auto got = ByTag(RunUntil(client, 4, std::chrono::seconds(5)));
  ASSERT_EQ(got.size(), 4u);

  EXPECT_EQ(got[1].kind, OutcomeKind::kStatus);
  EXPECT_EQ(got[1].status, "completed");
  EXPECT_EQ(got[1].answer, "Forty-two.");
  EXPECT_EQ(got[1].request_id, "r/1");
  EXPECT_EQ(json::parse(got[1].result_json),
            json::parse(R"({"confidence_level":"high","confidence_score":0.93})"));
  EXPECT_EQ(got[2].kind, OutcomeKind::kStatus);
  EXPECT_EQ(got[2].status, "failed");
  EXPECT_EQ(got[2].error, "model overloaded");
  EXPECT_EQ(got[3].kind, OutcomeKind::kStatus);
  EXPECT_EQ(got[3].status, "processing");
  EXPECT_EQ(got[4].kind, OutcomeKind::kBadRequest);
  EXPECT_EQ(got[4].http_status, 404);
  EXPECT_EQ(got[4].error, "HTTP 404: no such request");

  std::lock_guard<std::mutex> lock(seen.mu);
  for (const httplib::Request& req : seen.requests) {
    EXPECT_EQ(req.get_header_value("X-API-Key"), "test-key-123");
    EXPECT_EQ(req.get_header_value("Accept"), "application/json");
    EXPECT_FALSE(req.has_header("Idempotency-Key"));
  }
}

TEST(UppzyClient, FeedbackAndSessionClose) {
  TestServer ts;
  Seen seen;
  ts.server().Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    seen.Add(req);
    if (req.path.ends_with("/chat/feedback")) {
      res.set_content(
          R"({"status":"ok","request_id":"r1","feedback":"good","feedback_submitted_at":"2026-01-02T03:04:05Z"})",
          "application/json");
    } else {
      res.status = 204;
    }
  });
  ts.Start();
  UppzyClient client(Config(ts.BaseUrl()));
  client.StartFeedback(1, "site-1", "s-1", "r1", "good");
  client.StartSessionClose(2, "site-1", "s-1");
  auto got = ByTag(RunUntil(client, 2, std::chrono::seconds(5)));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].kind, OutcomeKind::kDelivered) << got[1].error;
  EXPECT_EQ(got[1].feedback_submitted_at, "2026-01-02T03:04:05Z");
  EXPECT_EQ(got[2].kind, OutcomeKind::kDelivered) << got[2].error;
  EXPECT_EQ(got[2].http_status, 204);

  std::lock_guard<std::mutex> lock(seen.mu);
  ASSERT_EQ(seen.requests.size(), 2u);
  for (const httplib::Request& req : seen.requests) {
    json body = json::parse(req.body);
    if (req.path.ends_with("/chat/feedback")) {
      EXPECT_EQ(req.target, "/api/v1/m2m/sites/site-1/chat/feedback");
      EXPECT_EQ(body, json({{"session_id", "s-1"}, {"request_id", "r1"}, {"feedback", "good"}}));
    } else {
      EXPECT_EQ(req.target, "/api/v1/m2m/sites/site-1/chat/session/close");
      EXPECT_EQ(body, json({{"session_id", "s-1"}}));
    }
    EXPECT_EQ(req.get_header_value("Content-Type"), "application/json");
  }
}

TEST(UppzyClient, ErrorStatusesAndGarbage) {
  TestServer ts;
  ts.server().Get(".*", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.path.ends_with("/429")) {
      res.status = 429;
      res.set_header("retry-after", "7");
      res.set_content(R"({"error":"slow down"})", "application/json");
    } else if (req.path.ends_with("/503")) {
      res.status = 503;
      res.set_content(R"({"error":"busy"})", "application/json");
    } else if (req.path.ends_with("/401")) {
      res.status = 401;
      res.set_content(R"({"error":"bad key"})", "application/json");
    } else {
      res.set_content("<html>not json</html>", "text/html");
    }
  });
  ts.Start();
  UppzyClient client(Config(ts.BaseUrl()));
  client.StartStatus(1, "s", "429");
  client.StartStatus(2, "s", "503");
  client.StartStatus(3, "s", "401");
  client.StartStatus(4, "s", "garbage");
  client.StartSubmit(5, "s", 1, 1, "sess", "m", "en");  // POST: no handler, httplib answers 404
  auto got = ByTag(RunUntil(client, 5, std::chrono::seconds(5)));
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[1].kind, OutcomeKind::kRateLimited);
  EXPECT_EQ(got[1].http_status, 429);
  ASSERT_TRUE(got[1].retry_after.has_value());
  EXPECT_EQ(got[1].retry_after->count(), 7000);
  EXPECT_EQ(got[1].error, "HTTP 429: slow down");
  EXPECT_EQ(got[2].kind, OutcomeKind::kServerError);
  EXPECT_EQ(got[2].error, "HTTP 503: busy");
  EXPECT_EQ(got[3].kind, OutcomeKind::kUnauthorized);
  EXPECT_EQ(got[3].http_status, 401);
  EXPECT_EQ(got[4].kind, OutcomeKind::kInvalidResponse);
  EXPECT_EQ(got[4].http_status, 200);
  EXPECT_EQ(got[5].kind, OutcomeKind::kBadRequest);
  EXPECT_EQ(got[5].http_status, 404);
}

TEST(UppzyClient, HugeBodyIsCutOffWithBoundedMemory) {
  constexpr size_t kTotal = 20 * 1024 * 1024;
  const std::string chunk(64 * 1024, 'a');
  TestServer ts;
  auto provide = [&chunk](size_t offset, httplib::DataSink& sink) {
    if (offset >= kTotal) {
      sink.done();
      return true;
    }
    return sink.write(chunk.data(), std::min(chunk.size(), kTotal - offset));
  };
  ts.server().Get(".*", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.path.ends_with("/chunked")) {
      res.set_chunked_content_provider("application/json", provide);  // no length: the write callback cuts
    } else {
      res.set_content_provider(
          kTotal, "application/json",  // Content-Length: curl refuses early
          [&](size_t offset, size_t, httplib::DataSink& sink) { return provide(offset, sink); });
    }
  });
  ts.Start();
  UpstreamConfig config = Config(ts.BaseUrl());
  config.max_response_bytes = 1024 * 1024;
  UppzyClient client(config);

  // Peak RSS grows by about 2 MB here (about 10 MB under ASan); buffering 20 MB would add over 30 MB.
  const long rss_before_kb = MaxRssKb();
  client.StartStatus(1, "s", "chunked");
  client.StartStatus(2, "s", "sized");
  auto got = ByTag(RunUntil(client, 2, std::chrono::seconds(5)));
  const long rss_growth_kb = MaxRssKb() - rss_before_kb;
  ASSERT_EQ(got.size(), 2u);
  for (uint64_t tag : {1, 2}) {
    EXPECT_EQ(got[tag].kind, OutcomeKind::kInvalidResponse) << got[tag].error;
    EXPECT_EQ(got[tag].error, "response larger than 1048576 bytes");
    EXPECT_EQ(got[tag].http_status, 200);
  }
#if defined(__SANITIZE_ADDRESS__)
  // ASan's shadow memory and quarantine add up to about 18 MB here; buffering would add 30 MB more.
  constexpr long kBoundKb = 28 * 1024;
#elif defined(__SANITIZE_THREAD__)
  // TSan's shadow and per-thread state (the test server runs 32 threads) add about 45 MB here;
  // buffering would add 30 MB more, and TSan shadows that too.
  constexpr long kBoundKb = 64 * 1024;
#else
  constexpr long kBoundKb = 16 * 1024;
#endif
  EXPECT_LT(rss_growth_kb, kBoundKb) << "the client must not buffer the whole 20 MB";
}

TEST(UppzyClient, SlowServerTimesOutWithinTheTotalTimeout) {
  TestServer ts;
  ts.server().Get(".*", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // the slow server under test
    res.set_content(R"({"status":"processing"})", "application/json");
  });
  ts.Start();
  UpstreamConfig config = Config(ts.BaseUrl());
  config.total_timeout_ms = 300;
  UppzyClient client(config);
  const auto start = steady_clock::now();
  client.StartStatus(1, "s", "r");
  auto done = RunUntil(client, 1, std::chrono::seconds(5));
  const long long elapsed = ElapsedMs(start);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome.kind, OutcomeKind::kNetwork);
  EXPECT_EQ(done[0].outcome.http_status, 0);
  EXPECT_NE(done[0].outcome.error.find("timed out"), std::string::npos) << done[0].outcome.error;
  EXPECT_GE(elapsed, 280);
  EXPECT_LT(elapsed, 1000);
  EXPECT_GE(done[0].outcome.duration.count(), 280);
}

TEST(UppzyClient, QueuedRequestsDoNotSpendTheirTimeoutWaitingForAConnection) {
  // 5 requests of 150 ms over 1 connection take 750 ms; each has 400 ms. Handing them all to curl at
  // once would time the last ones out while they wait for the connection.
  TestServer ts;
  ts.server().Get(".*", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // each answer takes 150 ms, by design
    res.set_content(R"({"status":"processing"})", "application/json");
  });
  ts.Start();
  UpstreamConfig config = Config(ts.BaseUrl());
  config.max_connections = 1;
  config.total_timeout_ms = 400;
  UppzyClient client(config);
  for (uint64_t tag = 1; tag <= 5; ++tag)
    client.StartStatus(tag, "s", std::string("r").append(std::to_string(tag)));
  EXPECT_EQ(client.InFlight(), 5u);
  UpstreamStats before = client.Stats();
  EXPECT_EQ(before.capacity, 1u) << "plain HTTP/1.1: one exchange per connection";
  EXPECT_EQ(before.waiting, 4u) << "the rest wait in the client's queue, their timeout not started";
  EXPECT_FALSE(before.multiplexing);
  std::vector<Completion> done = RunUntil(client, 5, std::chrono::seconds(5));
  ASSERT_EQ(done.size(), 5u);
  for (size_t i = 0; i < done.size(); ++i) {
    EXPECT_EQ(done[i].tag, i + 1) << "FIFO order";
    EXPECT_EQ(done[i].outcome.kind, OutcomeKind::kStatus) << done[i].outcome.error;
  }
  UpstreamStats after = client.Stats();
  EXPECT_EQ(after.waiting, 0u);
  EXPECT_EQ(after.answered, 5u);
  EXPECT_GE(after.answered_seconds, 0.7);
  // The queued ones waited 150, 300, 450 and 600 ms: 1.5 s in all.
  EXPECT_GE(after.waited_seconds, 1.3);
  EXPECT_FALSE(after.multiplexing);
}

TEST(UppzyClient, ConnectionRefusedIsNetwork) {
  // A port that was just free: bind, read it back, close.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);

  UppzyClient client(Config("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port))));
  const auto start = steady_clock::now();
  client.StartSubmit(1, "s", 1, 1, "sess", "private message text", "en");
  auto done = RunUntil(client, 1, std::chrono::seconds(5));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_LT(ElapsedMs(start), 1000);
  EXPECT_EQ(done[0].outcome.kind, OutcomeKind::kNetwork);
  EXPECT_EQ(done[0].outcome.http_status, 0);
  EXPECT_FALSE(done[0].outcome.error.empty());
  EXPECT_EQ(done[0].outcome.error.find("private message"), std::string::npos);
}

TEST(UppzyClient, ManyConcurrentRequestsReuseFewConnections) {
  TestServer ts;
  std::mutex mu;
  std::set<int> ports;
  std::atomic<int> now_serving{0};
  std::atomic<int> most_at_once{0};
  ts.server().Post(".*", [&](const httplib::Request& req, httplib::Response& res) {
    int n = ++now_serving;
    int seen = most_at_once.load();
    while (n > seen && !most_at_once.compare_exchange_weak(seen, n)) {
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      ports.insert(req.remote_port);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a busy server, so requests overlap
    res.status = 202;
    res.set_content(json({{"request_id", "r-" + req.get_header_value("Idempotency-Key")}}).dump(),
                    "application/json");
    --now_serving;
  });
  ts.Start();
  UppzyClient client(Config(ts.BaseUrl()));  // max_connections = 4
  constexpr int kRequests = 200;
  for (int i = 0; i < kRequests; ++i)
    client.StartSubmit(i, "s", i, 1, "sess-" + std::to_string(i), "hello", "en");
  EXPECT_EQ(client.InFlight(), static_cast<size_t>(kRequests));
  auto got = ByTag(RunUntil(client, kRequests, std::chrono::seconds(15)));
  ASSERT_EQ(got.size(), static_cast<size_t>(kRequests));
  EXPECT_EQ(client.InFlight(), 0u);
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(got[i].kind, OutcomeKind::kAccepted) << got[i].error;
    EXPECT_EQ(got[i].request_id, "r-" + std::to_string(i) + "-1");
  }
  EXPECT_LE(most_at_once.load(), 4);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_GE(ports.size(), 1u);
  EXPECT_LE(ports.size(), 4u) << "connections are kept alive and reused";
}

TEST(UppzyClient, BaseUrlRules) {
  auto accepts = [](const std::string& url) {
    UpstreamConfig c;
    c.base_url = url;
    try {
      UppzyClient client(c);
      return std::string();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
  };
  for (const char* ok :
       {"http://127.0.0.1", "http://127.0.0.1:8080/api/v1/", "http://127.9.8.7:1", "http://localhost",
        "http://LOCALHOST:9/x", "http://[::1]:8080/api/v1", "https://example.com",
        "https://api.uppzy.com/api/v1", "HTTPS://api.uppzy.com/api/v1/"}) {
    EXPECT_EQ(accepts(ok), "") << ok;
    EXPECT_EQ(CheckBaseUrl(ok), "") << ok;
  }
  for (const char* bad :
       {"http://example.com", "http://api.uppzy.com/api/v1", "http://10.0.0.1", "http://0.0.0.0:8080",
        "http://[::2]", "http://127.0.0.1.nip.io", "http://localhost.evil.com", "ftp://127.0.0.1", "",
        "api.uppzy.com/api/v1", "https://user:pw@api.uppzy.com", "https://api.uppzy.com/api/v1?x=1",
        "https://api.uppzy.com/#frag", "not a url"}) {
    std::string why = accepts(bad);
    EXPECT_NE(why.find("UPPZY_BASE_URL"), std::string::npos) << bad << " -> '" << why << "'";
  }
}

TEST(UppzyClient, WakeupInterruptsAWaitingPerform) {
  UppzyClient client(Config("http://127.0.0.1:9"));
  std::vector<Completion> out;
  const auto start = steady_clock::now();
  std::thread waker([&client] {
    // Elapsed time is what is tested: the wakeup lands while Perform is already waiting.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    client.Wakeup();
  });
  EXPECT_EQ(client.Perform(10000, &out), 0u);
  waker.join();
  const long long elapsed = ElapsedMs(start);
  EXPECT_GE(elapsed, 90);
  EXPECT_LT(elapsed, 2000);

  // A wakeup that lands before the wait is not lost.
  client.Wakeup();
  const auto again = steady_clock::now();
  client.Perform(10000, &out);
  EXPECT_LT(ElapsedMs(again), 2000);
}

TEST(UppzyClient, PerformWaitsWhenIdle) {
  UppzyClient client(Config("http://127.0.0.1:9"));
  std::vector<Completion> out;
  const auto start = steady_clock::now();
  EXPECT_EQ(client.Perform(150, &out), 0u);
  EXPECT_GE(ElapsedMs(start), 120);
}

}  // namespace
}  // namespace uppzy
