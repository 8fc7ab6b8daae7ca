// mock_load: a small load client for uppzy-mock (or anything that speaks the Uppzy async chat API).
//
// It keeps N keep-alive connections busy with request pairs, on one thread with libcurl's multi
// interface: a submit (POST .../chat/async, ~150-byte body) then a status read (GET .../requests/{id}).
// It prints one line of results: pairs/s, requests/s, latency percentiles, the longest stall, errors,
// how many TCP connections were opened, and its own CPU time.
//
// --burst: the connections work in lockstep rounds instead of each at its own pace. Round 1 opens every
// connection at the same moment (a burst of connects, as when a worker with many connections starts);
// each later round waits until every pair of the round is done, then all connections send their next
// submit together on their kept-alive connections (many requests ready at the same instant: what
// stalled libmicrohttpd's own epoll thread at 128 and 256 connections, issue 15).
//
//   uppzy-mock --port-file /tmp/mock.port &
//   mock_load --url http://127.0.0.1:$(cat /tmp/mock.port)/api/v1 --connections 16 --pairs 40000
//   mock_load --url ... --connections 500 --pairs 5000 --burst
//
// Exit status: 0 if every request got a 2xx answer, 1 otherwise, 2 on a usage error.
#include <curl/curl.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  std::string url = "http://127.0.0.1:8080/api/v1";
  std::string key = "mock-key";
  std::string site = "load";
  long connections = 16;
  long pairs = 40000;
  bool burst = false;
};

// One connection's worth of work: an easy handle that runs pairs back to back.
struct Slot {
  CURL* easy = nullptr;
  int index = 0;
  bool submitting = true;
  std::string response;
  std::string request_id;
  Clock::time_point started;
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  static_cast<Slot*>(user)->response.append(data, size * n);
  return size * n;
}

void Usage() {
  std::fprintf(
      stderr,
      "usage: mock_load [--url BASE] [--key KEY] [--site SITE] [--connections N] [--pairs M] [--burst]\n"
      "  BASE defaults to http://127.0.0.1:8080/api/v1; N to 16; M to 40000\n"
      "  --burst: every connection opened at once, then rounds in which all send together\n");
}

bool ParseArgs(int argc, char** argv, Config* c) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--burst") {
      c->burst = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    std::string v = argv[++i];
    if (a == "--url") {
      c->url = v;
    } else if (a == "--key") {
      c->key = v;
    } else if (a == "--site") {
      c->site = v;
    } else if (a == "--connections") {
      c->connections = std::atol(v.c_str());
    } else if (a == "--pairs") {
      c->pairs = std::atol(v.c_str());
    } else {
      return false;
    }
  }
  return c->connections > 0 && c->pairs > 0;
}

// Extracts "request_id":"..." without a JSON parser: the client must stay cheap.
std::string FindRequestId(const std::string& body) {
  static constexpr char kKey[] = "\"request_id\":\"";
  size_t at = body.find(kKey);
  if (at == std::string::npos) return {};
  at += sizeof kKey - 1;
  size_t end = body.find('"', at);
  return end == std::string::npos ? std::string() : body.substr(at, end - at);
}

double CpuSeconds(const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; }

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (!ParseArgs(argc, argv, &cfg)) {
    Usage();
    return 2;
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, cfg.connections);

  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, ("X-API-Key: " + cfg.key).c_str());
  headers = curl_slist_append(headers, "Content-Type: application/json");
  const std::string submit_url = cfg.url + "/m2m/sites/" + cfg.site + "/chat/async";
  const std::string status_prefix = cfg.url + "/m2m/sites/" + cfg.site + "/chat/requests/";
  // Pads the message so that a submit body is about 150 bytes, like a real chat message.
  const std::string padding(80, 'x');

  long next_pair = 0;
  long in_flight = 0;
  long pairs_done = 0;
  long requests_done = 0;
  long errors = 0;
  std::vector<float> latencies_ms;
  latencies_ms.reserve(static_cast<size_t>(cfg.pairs) * 2);

  auto start_submit = [&](Slot& s) {
    long pair = next_pair++;
    std::string body = "{\"session_id\":\"load-" + std::to_string(s.index) + "\",\"message\":\"hello " +
                       std::to_string(pair) + " " + padding + "\",\"response_language\":\"en\"}";
    s.submitting = true;
    s.response.clear();
    curl_easy_setopt(s.easy, CURLOPT_URL, submit_url.c_str());
    curl_easy_setopt(s.easy, CURLOPT_COPYPOSTFIELDS, body.c_str());
    s.started = Clock::now();
    ++in_flight;
    curl_multi_add_handle(multi, s.easy);
  };
  auto start_status = [&](Slot& s) {
    s.submitting = false;
    s.response.clear();
    std::string url = status_prefix + s.request_id;
    curl_easy_setopt(s.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(s.easy, CURLOPT_HTTPGET, 1L);
    s.started = Clock::now();
    ++in_flight;
    curl_multi_add_handle(multi, s.easy);
  };

  std::vector<Slot> slots(static_cast<size_t>(std::min(cfg.connections, cfg.pairs)));
  for (size_t i = 0; i < slots.size(); ++i) {
    Slot& s = slots[i];
    s.index = static_cast<int>(i);
    s.easy = curl_easy_init();
    curl_easy_setopt(s.easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(s.easy, CURLOPT_WRITEFUNCTION, &Collect);
    curl_easy_setopt(s.easy, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(s.easy, CURLOPT_PRIVATE, &s);
    curl_easy_setopt(s.easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(s.easy, CURLOPT_TIMEOUT_MS, 60000L);
  }

  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  const Clock::time_point t0 = Clock::now();
  for (Slot& s : slots) start_submit(s);

  long connects = 0;
  long rounds = 1;
  std::vector<Slot*> idle;  // --burst: slots whose pair is done, waiting for the round to end
  while (in_flight > 0) {
    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      CURLcode result = msg->data.result;
      Slot* s = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, reinterpret_cast<char**>(&s));
      long status = 0, opened = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &opened);
      connects += opened;
      curl_multi_remove_handle(multi, easy);
      --in_flight;
      latencies_ms.push_back(std::chrono::duration<float, std::milli>(Clock::now() - s->started).count());
      ++requests_done;

      bool ok = result == CURLE_OK && status >= 200 && status < 300;
      if (ok && s->submitting) {
        s->request_id = FindRequestId(s->response);
        ok = !s->request_id.empty();
      }
      if (!ok) {
        if (errors < 5) {
          std::fprintf(stderr, "error: %s status=%ld curl=%s\n", s->submitting ? "submit" : "status", status,
                       curl_easy_strerror(result));
        }
        ++errors;
      } else if (s->submitting) {
        start_status(*s);
        continue;
      } else {
        ++pairs_done;
      }
      if (next_pair >= cfg.pairs) continue;
      if (!cfg.burst) {
        start_submit(*s);
        continue;
      }
      idle.push_back(s);
      if (in_flight == 0) {  // the round is over: every connection sends at once
        ++rounds;
        for (Slot* next : idle) {
          if (next_pair < cfg.pairs) start_submit(*next);
        }
        idle.clear();
      }
    }
    if (in_flight > 0) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);

  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    if (latencies_ms.empty()) return 0.0f;
    return latencies_ms[std::min(latencies_ms.size() - 1, static_cast<size_t>(p * latencies_ms.size()))];
  };
  std::printf(
      "connections=%ld pairs=%ld errors=%ld elapsed_s=%.2f pairs_per_s=%.0f requests_per_s=%.0f "
      "p50_ms=%.2f p99_ms=%.2f max_ms=%.1f tcp_connects=%ld client_cpu_s=%.2f%s\n",
      static_cast<long>(slots.size()), pairs_done, errors, secs, pairs_done / secs, requests_done / secs,
      pct(0.50), pct(0.99), latencies_ms.empty() ? 0.0f : latencies_ms.back(), connects,
      CpuSeconds(ru1.ru_utime) + CpuSeconds(ru1.ru_stime) - CpuSeconds(ru0.ru_utime) -
          CpuSeconds(ru0.ru_stime),
      cfg.burst ? (" burst_rounds=" + std::to_string(rounds)).c_str() : "");

  for (Slot& s : slots) curl_easy_cleanup(s.easy);
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  return errors == 0 ? 0 : 1;
}
