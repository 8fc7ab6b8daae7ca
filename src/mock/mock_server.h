// The mock Uppzy server: a real HTTP/1.1 server on a socket that speaks the Uppzy M2M chat API (under the
// prefix /api/v1) and whose answers a test scripts per job (see mock_script.h). Tests embed it
// in-process; `uppzy-mock` runs it as a process for the demo and load benchmarks.
//
// Transport: libmicrohttpd in epoll mode, its event loop run by our own server thread(s) (see
// mock_server.cc for why not libmicrohttpd's internal thread), on one listening socket with a backlog
// of 4,096. It holds thousands of keep-alive connections without a thread each, and any number of them
// may send at once. Delayed answers (--latency-ms, `hang`) suspend the connection and a timer thread
// resumes it when due, so a slow answer never blocks a server thread.
//
// Endpoints (every /api/v1 request needs `X-API-Key: <api_key>`, or with --site the key of its site,
// else 401, checked before anything but the site; an unknown path is 404 and a wrong method 405, both
// with a JSON `error` body):
//   POST /api/v1/m2m/sites/{site}/chat/async            {"session_id","message","response_language"?}
//        -> 202 {"session_id","request_id","status":"queued"}; 400 on a bad body.
//   GET  /api/v1/m2m/sites/{site}/chat/requests/{id}
//        -> 200 {"session_id","request_id","status":"processing"} until ready, then
//           200 {...,"status":"completed","answer":"echo: <message>","confidence_level":"high",
//                "confidence_score":0.93}, or {...,"status":"failed","error":"<reason>"} (mock.fail);
//           404 for an unknown id.
//   POST /api/v1/m2m/sites/{site}/chat/feedback         {"session_id","request_id","feedback":"good"|"bad"}
//        -> 400 bad body; 404 unknown request (or a request of another session); 409 not completed
//           (processing or failed); 200 {"status":"ok","request_id","feedback","feedback_submitted_at"}
//           the first time, the same without feedback_submitted_at after that.
//   POST /api/v1/m2m/sites/{site}/chat/session/close    {"session_id"}
//        -> 400 bad body; 200 {"status":"closed","session_id"} (+ "already_closed":true the next times).
//   GET  /_mock/stats    (no key) the counters below, as JSON.
//   GET  /_mock/requests (no key) the newest 200,000 accepted requests (request_log_capacity), oldest
//                        first: [{"request_id","site","submitted_ms","ready_ms","first_seen_ms",
//                        "status_calls","outcome"}, ...]. Times are whole milliseconds of the mock's
//                        steady clock since it started:
//                          submitted_ms   when the submission was accepted
//                          ready_ms       when its answer is (or will be) ready: submitted_ms plus
//                                         the answer time (--ready-dist draw, --ready-after-ms or
//                                         mock.ready), or the status call at which a poll script
//                                         completed or failed it earlier
//                          first_seen_ms  the first status call that returned completed (or failed);
//                                         null until then
//                          status_calls   status calls that found the request, whatever they answered
//                                         (processing, completed, scripted or random faults)
//                          outcome        what the first_seen call returned: "completed", "failed" or
//                                         null
//   POST /_mock/reset    (no key) clears every request, session, record and counter, and refills every
//                        rate-limit bucket -> 200 {"status":"reset"}.
//   GET  /_mock/healthz  (no key) 200 {"status":"ok"}.
//   POST /_mock/faults   (no key) {"rate_429":P,"rate_5xx":P} sets the random fault rates from now on
//                        (rate_5xx 1.0: Uppzy is down); answers the rates in force.
// Sites: a request_id is found only under the {site} it was submitted to (status and feedback under
// another site are 404). Without --site every site takes --api-key; with --site (repeatable SITE=KEY)
// only the listed sites are served, each with its own key: a site not listed is 404 {"error":"site not
// found"} whatever the key, and a wrong key is 401 for that site only.
//
// Rate limits (--rate-limit SITE=N[/s][,BURST], repeatable): a token bucket per site that starts full,
// holds at most BURST tokens (default N rounded up, at least 1) and refills at N per second. Every
// /api/v1 request of the site that passes the key check takes a token (submit, status, feedback, close,
// and a 404/405/400 too); without one it is answered 429 {"error":"rate limit exceeded"} with
// `Retry-After: S`, the whole seconds (>= 1) until a token is there, and takes none.
//
// Order of decisions for an /api/v1 request: site (404, with --site), key (401), rate limit (429),
// route (404/405), body size (413), body (400), then the job's script (mock.submit/poll/feedback/close),
// then, only if the call is not scripted, the random faults (--fault-rate-429, then --fault-rate-5xx),
// then the normal behaviour.
//
// Stats (GET /_mock/stats):
//   requests_total         every /api/v1 request, including refused ones (401, 404, 405, 413, 400)
//   unauthorized           /api/v1 requests answered 401
//   submits, polls, feedbacks, closes
//                          every request to that endpoint that passed the key check, whatever the answer
//                          (400, scripted or random faults included)
//   submits_by_session     {"<session_id>": N}: accepted submissions (202) only
//   duplicate_submissions  sum over (session_id, message) of max(0, accepted submissions - 1)
//   feedback_by_request    {"<request_id>": N}: feedback posts answered 200
//   closes_by_session      {"<session_id>": N}: session close posts answered 200 (N > 1: repeated closes)
//   in_progress            accepted requests that are neither completed nor failed yet
//   requests_stored        accepted requests held in memory (all of them until a reset)
//   answers                aggregates over the records of GET /_mock/requests:
//     records                records held (the newest 200,000)
//     completed              of them, those a status call has returned as completed
//     ready_to_seen_p50_ms, ready_to_seen_p95_ms, ready_to_seen_max_ms
//                            first_seen_ms - ready_ms over the completed ones (nearest rank): how late
//                            the client saw its answer
//     status_calls_per_completed
//                            mean status_calls of the completed ones (including calls after the first
//                            completed one)
//   sites                  {"<site>": {...}} per site: with --site the listed ones; without, the sites
//                          named by --rate-limit and the first 64 others seen:
//     requests               requests that passed the key check and the rate limit
//     rate_limited           requests answered 429 by the rate limit
//     unauthorized           requests answered 401
//     rate_limit             {"per_second": N, "burst": B}, or null
//     first_second           the second (since the mock started) of per_second[0]: 0 for the first hour
//     per_second             [n, ...]: `requests` in each whole second of the mock's steady clock since
//                            it started (the newest 3,600); the last entry is the current, partial second
//     rate_limited_per_second  the same for `rate_limited`
//     max_per_second, p99_per_second
//                            the largest and the 99th percentile (nearest rank) of per_second
//   sites_total            the sums over the sites: requests, rate_limited, unauthorized (also of
//                          requests that name no site), per_second (summed second by second),
//                          first_second, max_per_second and p99_per_second of that sum; and
//                          unknown_site (404 for a site that --site does not list) and untracked
//                          (admitted requests that name no site or a site beyond the 64)
// Reset() clears every count; the seconds keep counting from the start (per_second shows zeros for the
// seconds before the reset).// A scripted non-ok submit answer (429, 503, hang, ...) creates no request and
// no request_id. request_id looks like `req_<counter>_<12 hex digits>`; the counter is not reset by Reset(),
// so ids stay unique for the life of the process.
//
// Thread-safety: Start() and Stop() must not race each other; every other method is thread-safe and
// may be called while the server runs. Internal state is one mutex-protected table, plus one small
// mutex per site for keys, buckets and per-second counts; every critical section is a few map
// operations (the stats and requests documents copy what they need and are written outside the lock).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mock/mock_ready.h"
#include "mock/mock_sites.h"

namespace uppzy::mock {

// Mirrors the flags of the `uppzy-mock` binary.
struct MockOptions {
  // Address to listen on: an IPv4 or IPv6 literal or a host name. Default: 127.0.0.1.
  std::string host = "127.0.0.1";
  // TCP port; 0 picks a free port (read it with MockServer::port()). Default: 0.
  uint16_t port = 0;
  // The value every /api/v1 request must send in X-API-Key, unless `sites` is set. Default: "mock-key".
  std::string api_key = "mock-key";
  // --site SITE=KEY: the sites served, each with its own key (api_key is then unused); another site
  // is 404. Site names are unique (see ValidSiteName). Default: empty, every site takes api_key.
  std::vector<SiteKey> sites{};
  // --rate-limit SITE=N[/s][,BURST]: a token bucket per site (see mock_sites.h). With `sites`, only
  // sites listed there. Default: none, no limit.
  std::map<std::string, RateLimit> rate_limits{};
  // A request completes this long after submission, unless its message says mock.ready=MS. Default: 1000.
  int64_t ready_after_ms = 1000;
  // --ready-dist: when set, each accepted request's answer time is drawn from it (seeded by `seed`)
  // instead of ready_after_ms; mock.ready=MS still wins. Default: unset.
  std::optional<ReadyDist> ready_dist{};
  // Request records kept for GET /_mock/requests (the newest). Default: 200000.
  size_t request_log_capacity = RequestLog::kDefaultCapacity;
  // Probability (0..1) that an unscripted /api/v1 call is answered 429. Default: 0.
  double fault_rate_429 = 0.0;
  // Probability (0..1) that an unscripted /api/v1 call is answered 503. Default: 0.
  double fault_rate_5xx = 0.0;
  // Each /api/v1 answer is delayed by latency_ms milliseconds: a uniform random 0..latency_ms, or
  // exactly latency_ms with latency_fixed (a stand-in for a network round trip: the connection stays
  // busy meanwhile, as it would over a slow link). Default: 0, not fixed.
  int64_t latency_ms = 0;
  bool latency_fixed = false;
  // A `hang` answer holds the connection this long, then closes it without a response. Default: 120000.
  int64_t hang_max_ms = 120000;
  // Server threads, each with its own epoll loop, sharing the listening socket. 1 is enough for
  // >10,000 requests/s. Default: 1.
  unsigned threads = 1;
  // Maximum simultaneous connections. Default: 20000.
  unsigned connection_limit = 20000;
  // An idle keep-alive connection is closed after this many seconds. Default: 300.
  unsigned idle_timeout_s = 300;
  // Seed of the random faults, latencies, request_id suffixes and --ready-dist draws; 0 seeds from
  // std::random_device. Default: 0.
  uint64_t seed = 0;
};

class MockServer {
 public:
  // Does not open a socket; call Start().
  explicit MockServer(MockOptions options);
  // Calls Stop().
  ~MockServer();
  MockServer(const MockServer&) = delete;
  MockServer& operator=(const MockServer&) = delete;

  // Binds, listens and starts serving. Raises the process's soft RLIMIT_NOFILE to its hard limit (so
  // thousands of connections fit). Throws std::invalid_argument for an option out of range, and
  // std::runtime_error if the host does not resolve, the address cannot be bound, or the server is
  // already started.
  void Start();

  // The bound TCP port. Requires Start() to have succeeded.
  int port() const;

  // Closes every connection (held `hang` and delayed answers included) and stops the threads.
  // Idempotent; returns once no server thread runs.
  void Stop();

  // The stats document described at the top of this file.
  std::string StatsJson() const;

  // The request records of GET /_mock/requests.
  std::string RequestsJson() const;

  // Clears every request, session, script position and counter (as POST /_mock/reset does).
  void Reset();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy::mock
