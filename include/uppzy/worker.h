// The worker process: claims jobs, talks to Uppzy, stores outcomes. `uppzy-worker run` is one Worker.
//
// Three threads: the engine (all HTTP, on libcurl multi; jobs waiting on Uppzy hold no thread, only
// a timer entry), the coordinator (all SQL: claims, batched writes, leases, rescue, incidents), and a
// LISTEN thread that wakes the coordinator when jobs are inserted. No transaction spans an HTTP call.
//
// Thread-safety: Run() is called once, from one thread; Stop() and ReloadKeys() may be called from any
// thread (and from a signal-handling thread: they only set flags).
// Run() throws std::invalid_argument for a configuration the HTTP client refuses, and for key files
// that no longer read cleanly at start (KeyRing::Load's problems, one per line); it never throws
// because of the database (it reconnects with backoff) or Uppzy (outcomes are data).
#pragma once

#include <memory>

#include "uppzy/config.h"

namespace uppzy::metrics {
class WorkerMetrics;
}

namespace uppzy {

struct WorkerOptions {
  bool until_empty = false;  // return once no job is queued, retrying, submitting or polling
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

  // Asks the running worker to re-read its key files (KeyRing::Reload) within about 100 ms, as on
  // SIGHUP. Key files are also re-read on their own when they change (checked every second).
  void ReloadKeys();

  // What this worker counted (submissions, outcomes, ...): the same objects /metrics serves.
  const metrics::WorkerMetrics& metrics() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy
