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

// What a client has seen of the network since it was built: for metrics and the sizing hint.
struct UpstreamStats {
  // Exchanges started and waiting in the client's queue: every connection (or, over HTTP/2, every
  // stream) is busy. Their timeout has not started.
  size_t waiting = 0;
  // Total time exchanges spent in that queue.
  double waited_seconds = 0;
  // Exchanges that got an HTTP answer, and their total time on the wire (from handing them to curl to
  // the last byte): the mean is the round trip plus Uppzy's own time.
  uint64_t answered = 0;
  double answered_seconds = 0;
  // True once an answer came over HTTP/2: exchanges are then multiplexed over each connection. False
  // over HTTP/1.1, where each connection carries one exchange at a time.
  bool multiplexing = false;
  // Exchanges handed to curl at once: the connections, times the streams per connection when
  // multiplexing.
  size_t capacity = 0;
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

  // Counters and the current queue; cheap (no system call).
  virtual UpstreamStats Stats() const = 0;
};

}  // namespace uppzy
