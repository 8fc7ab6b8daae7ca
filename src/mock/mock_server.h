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
// Endpoints (every /api/v1 request needs `X-API-Key: <api_key>`, else 401, checked before anything
// else; an unknown path is 404 and a wrong method 405, both with a JSON `error` body):
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
//   POST /_mock/reset    (no key) clears every request, session and counter -> 200 {"status":"reset"}.
//   GET  /_mock/healthz  (no key) 200 {"status":"ok"}.
//   POST /_mock/faults   (no key) {"rate_429":P,"rate_5xx":P} sets the random fault rates from now on
//                        (rate_5xx 1.0: Uppzy is down); answers the rates in force.
// The {site} segment is not checked; requests are global, not per site.
//
// Order of decisions for an /api/v1 request: key (401), route (404/405), body size (413), body (400),
// then the job's script (mock.submit/poll/feedback/close), then, only if the call is not scripted, the
// random faults (--fault-rate-429, then --fault-rate-5xx), then the normal behaviour.
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
// A scripted non-ok submit answer (429, 503, hang, ...) creates no request and no request_id.
// request_id looks like `req_<counter>_<12 hex digits>`; the counter is not reset by Reset(), so ids stay
// unique for the life of the process.
//
// Thread-safety: Start() and Stop() must not race each other; every other method is thread-safe and
// may be called while the server runs. Internal state is one mutex-protected table; every critical
// section is a few map operations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace uppzy::mock {

// Mirrors the flags of the `uppzy-mock` binary.
struct MockOptions {
  // Address to listen on: an IPv4 or IPv6 literal or a host name. Default: 127.0.0.1.
  std::string host = "127.0.0.1";
  // TCP port; 0 picks a free port (read it with MockServer::port()). Default: 0.
  uint16_t port = 0;
  // The value every /api/v1 request must send in X-API-Key. Default: "mock-key".
  std::string api_key = "mock-key";
  // A request completes this long after submission, unless its message says mock.ready=MS. Default: 1000.
  int64_t ready_after_ms = 1000;
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
  // Seed of the random faults, latencies and request_id suffixes; 0 seeds from std::random_device.
  // Default: 0.
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

  // Clears every request, session, script position and counter (as POST /_mock/reset does).
  void Reset();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy::mock
