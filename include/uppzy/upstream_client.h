// What the engine needs of Uppzy's HTTP API: start exchanges tagged by the caller, and collect the
// finished ones as Outcome values. The seam between the engine and the network: UppzyClient
// (uppzy_client.h) is the real one, over libcurl multi; a test supplies a fake that answers by script.
//
// Thread-safety: one thread (the engine's) calls everything except Wakeup(), which any thread may
// call. No method throws: every exchange ends in an Outcome (a 429 or a timeout is data).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/outcome.h"

namespace uppzy {

enum class RequestKind { kSubmit, kStatus, kFeedback, kSessionClose };

// "submit", "status", "feedback", "session_close": for logs and metrics labels.
std::string_view ToString(RequestKind k);

struct Completion {
  uint64_t tag = 0;  // the caller's tag, as given to Start*
  RequestKind kind = RequestKind::kSubmit;
  Outcome outcome;
};

class UpstreamClient {
 public:
  virtual ~UpstreamClient() = default;

  // POST {base}/m2m/sites/{site}/chat/async with {session_id, message, response_language} and
  // Idempotency-Key: <job_id>-<attempt>.
  virtual void StartSubmit(uint64_t tag, const std::string& site, int64_t job_id, int attempt,
                           const std::string& session_id, const std::string& message,
                           const std::string& language) = 0;
  // GET {base}/m2m/sites/{site}/chat/requests/{request_id}
  virtual void StartStatus(uint64_t tag, const std::string& site, const std::string& request_id) = 0;
  // POST {base}/m2m/sites/{site}/chat/feedback with {session_id, request_id, feedback}
  virtual void StartFeedback(uint64_t tag, const std::string& site, const std::string& session_id,
                             const std::string& request_id, const std::string& feedback) = 0;
  // POST {base}/m2m/sites/{site}/chat/session/close with {session_id}
  virtual void StartSessionClose(uint64_t tag, const std::string& site, const std::string& session_id) = 0;
  // Drives transfers: waits up to `max_wait_ms` for network activity or Wakeup(), then appends every
  // finished exchange to `out`. Returns the number appended.
  virtual size_t Perform(long max_wait_ms, std::vector<Completion>* out) = 0;
  // Interrupts a Perform() that is waiting. Thread-safe.
  virtual void Wakeup() = 0;
  // Exchanges started and not yet returned by Perform (queued ones included).
  virtual size_t InFlight() const = 0;
};

}  // namespace uppzy
