// The behaviour of the mock Uppzy server, apart from any socket: routes one request, passes it through
// the site gate (keys, rate limits: mock_sites.h), applies the job's script and the random faults, keeps
// the requests, sessions, answer-time records (mock_ready.h) and counters, and decides the answer.
// mock_api.cc answers /api/v1, mock_control.cc the /_mock/ endpoints; mock_server.cc carries the
// answers over HTTP; the contract is documented in mock_server.h.
//
// Thread-safety: every method is thread-safe. State is guarded by one mutex (the site gate has its
// own, per site); JSON parsing and serialisation happen outside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "mock/mock_ready.h"
#include "mock/mock_script.h"
#include "mock/mock_server.h"
#include "mock/mock_sites.h"

namespace uppzy::mock {

// What the transport hands over: one complete HTTP request.
struct ApiRequest {
  std::string_view method;
  std::string_view path;                    // without the query string
  std::optional<std::string_view> api_key;  // the X-API-Key header, if sent
  std::string_view body;
  bool body_too_large = false;  // the body exceeded kMaxBodyBytes and was not kept
};

// What the transport must do.
struct Answer {
  enum class Kind : uint8_t {
    kJson,     // `status` with `body` (JSON) and the headers below
    kGarbage,  // 200 with a body that is not JSON
    kHuge,     // 200 with a 20 MiB body, streamed
    kReset,    // close the connection without a response
    kHang,     // hold the connection, then close it without a response
  };
  Kind kind = Kind::kJson;
  unsigned status = 200;
  std::string body;
  int32_t retry_after_s = -1;   // >= 0: send `Retry-After`
  const char* allow = nullptr;  // 405: the `Allow` header
  bool delayable = false;       // an /api/v1 answer, subject to --latency-ms
};

inline constexpr size_t kMaxBodyBytes = 1 << 20;
inline constexpr uint64_t kHugeBodyBytes = 20ull << 20;

// `status` with a JSON body, `j` or {"error": error}.
Answer JsonAnswer(unsigned status, const nlohmann::json& j);
Answer ErrorAnswer(unsigned status, std::string_view error);

class MockApi {
 public:
  // `origin` is the mock's time 0: second 0 of the per-second counts, and 0 ms of the request records.
  explicit MockApi(const MockOptions& options, SteadyTime origin = std::chrono::steady_clock::now());

  // Decides the answer to one request received at `now`.
  Answer Handle(const ApiRequest& request, SteadyTime now);

  // The stats document (see mock_server.h), as of `now`.
  std::string StatsJson(SteadyTime now) const;

  // The document of GET /_mock/requests (see mock_server.h).
  std::string RequestsJson() const;

  // Forgets every request, session, script position and counter.
  void Reset();

  // A random delay in [0, max_ms] milliseconds (thread-safe; used for --latency-ms).
  std::chrono::milliseconds RandomDelay(int64_t max_ms);

 private:
  enum class Forced : uint8_t { kNone, kCompleted, kFailed };
  enum class Status : uint8_t { kProcessing, kCompleted, kFailed };

  // One accepted submission. Most have no poll script and no fail reason.
  struct Request {
    std::string site;  // the {site} of the submission: the only one that finds this request
    std::string session_id;
    std::string message;
    std::string fail;  // empty: no mock.fail
    std::unique_ptr<Script> poll_script;
    SteadyTime ready_at;
    uint32_t polls = 0;
    uint32_t feedbacks = 0;  // posts answered 200
    Forced forced = Forced::kNone;
    uint64_t record = 0;  // the handle of its record in log_
  };

  // Per (session_id, message).
  struct Pair {
    uint64_t attempts = 0;  // submits that passed validation (script position)
    uint64_t accepted = 0;  // 202 answers
  };

  struct Counters {
    uint64_t requests_total = 0;
    uint64_t unauthorized = 0;
    uint64_t submits = 0;
    uint64_t polls = 0;
    uint64_t feedbacks = 0;
    uint64_t closes = 0;
    uint64_t duplicate_submissions = 0;
  };

  Answer Submit(std::string_view site, std::string_view body, SteadyTime now);
  Answer Poll(std::string_view site, std::string_view request_id, SteadyTime now);
  Answer Feedback(std::string_view site, std::string_view body, SteadyTime now);
  Answer Close(std::string_view body);
  Answer Mock(std::string_view method, std::string_view path, std::string_view body, SteadyTime now);

  // The random 429/503 of an unscripted call, if one is drawn. Requires mu_.
  std::optional<Answer> RandomFaultLocked();
  // Notes in the request's record a status call that answered `status`. Requires mu_.
  void NoteStatusCallLocked(const Request& request, Status status, SteadyTime now);
  static Status StatusOf(const Request& request, SteadyTime now);
  // Milliseconds since origin_ (0 before it).
  int64_t MsOf(SteadyTime t) const;

  const SteadyTime origin_;
  const std::chrono::milliseconds ready_after_;
  SiteGate gate_;
  double fault_rate_429_;  // guarded by mu_; POST /_mock/faults changes them at run time
  double fault_rate_5xx_;  // guarded by mu_

  mutable std::mutex mu_;
  std::mt19937_64 rng_;                                            // guarded by mu_
  std::optional<ReadySampler> ready_sampler_;                      // guarded by mu_; --ready-dist
  RequestLog log_;                                                 // guarded by mu_
  uint64_t next_request_ = 1;                                      // guarded by mu_; survives Reset()
  Counters counters_;                                              // guarded by mu_
  std::unordered_map<std::string, Request> requests_;              // guarded by mu_
  std::unordered_map<std::string, Pair> pairs_;                    // guarded by mu_
  std::unordered_map<std::string, uint64_t> submits_by_session_;   // guarded by mu_
  std::unordered_map<std::string, uint64_t> feedback_script_pos_;  // guarded by mu_
  std::unordered_map<std::string, uint64_t> close_script_pos_;     // guarded by mu_
  std::unordered_map<std::string, uint64_t> closed_sessions_;      // guarded by mu_; closes answered 200
};

}  // namespace uppzy::mock
