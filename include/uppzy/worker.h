// The worker process: claims jobs, talks to Uppzy, stores outcomes. `uppzy-worker run` is one Worker.
//
// Three threads: the engine (all HTTP, on libcurl multi; jobs waiting on Uppzy hold no thread, only
// a timer entry), the coordinator (all SQL: claims, batched writes, leases, rescue, incidents), and a
// LISTEN thread that wakes the coordinator when jobs are inserted. No transaction spans an HTTP call.
//
// Thread-safety: Run() is called once, from one thread; Stop() may be called from any thread.
// Run() throws std::invalid_argument for a configuration the HTTP client refuses; it never throws
// because of the database (it reconnects with backoff) or Uppzy (outcomes are data).
#pragma once

#include <atomic>
#include <memory>

#include "uppzy/breaker.h"
#include "uppzy/config.h"

namespace uppzy {

struct WorkerOptions {
  bool until_empty = false;  // return once no job is queued, retrying, submitting or polling
};

// Counters a test or the metrics endpoint can read. All monotonic except in_flight.
struct WorkerCounters {
  std::atomic<long long> submissions{0};
  std::atomic<long long> polls{0};
  std::atomic<long long> completed{0};
  std::atomic<long long> failed{0};
  std::atomic<long long> retries{0};
  std::atomic<long long> fenced_writes{0};
  std::atomic<long long> rescued{0};
  std::atomic<long long> rejected_writes{0};  // refused by the database for good; the row was failed
  // steady_clock milliseconds of the coordinator's last pass that reached the database without an
  // error; /readyz turns 503 when it is older than kStalledAfter.
  std::atomic<long long> db_progress_at_ms{0};
  std::atomic<long long> in_flight{0};
  std::atomic<BreakerState> breaker_state{BreakerState::kClosed};  // the engine's circuit breaker
};

class Worker {
 public:
  Worker(Config config, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Blocks until Stop() (then hands back what it holds) or, with until_empty, until the table has no
  // unfinished job. Returns the process exit code (0).
  int Run();

  // Graceful stop: no new claims; in-flight HTTP calls get UPPZY_SHUTDOWN_GRACE_MS to finish; every
  // row still held is handed back. Idempotent.
  void Stop();

  const WorkerCounters& counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
