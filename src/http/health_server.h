// The worker's own HTTP endpoint (UPPZY_HTTP_ADDR): GET /healthz answers 200 while the process is alive.
// Runs its own thread; Start() and Stop() are called from one thread.
#pragma once

#include <memory>
#include <string>

namespace uppzy::http {

class HealthServer {
 public:
  HealthServer();
  ~HealthServer();
  // Listens on "host:port" (port 0 picks a free one). Throws std::invalid_argument naming
  // UPPZY_HTTP_ADDR when it cannot listen.
  void Start(const std::string& addr);
  int port() const;
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy::http
