// The worker's own HTTP endpoint (UPPZY_HTTP_ADDR):
//   GET /healthz  200 while the process is alive;
//   GET /readyz   200 when the database is reachable and no incident is open, else 503 with a
//                 one-line JSON reason (from HealthSources::ready);
//   GET /metrics  Prometheus text format: HealthSources::metrics, by metrics::Exposition().
// Anything else is 404. Served by http::Server (src/http/server.h): one epoll thread of its own that answers
// every request itself, so idle or slow clients (up to 4,096 connections, each closed after 10 s
// without progress) cannot make /healthz wait. Start() and Stop() are called from one thread. The
// sources are read from the server's thread and must outlive Stop(); ready() must not block.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace prometheus {
class Registry;
}

namespace uppzy::http {

struct HealthSources {
  // Rendered on /metrics (the registry is thread-safe; reading it never blocks on the worker). Null: an
  // empty exposition.
  const prometheus::Registry* metrics = nullptr;
  // /readyz: {ready, one-line JSON body}. Must not block (answer from a cache). Null: always ready.
  std::function<std::pair<bool, std::string>()> ready;
};

class HealthServer {
 public:
  HealthServer();
  ~HealthServer();
  // Listens on "host:port" (port 0 picks a free one). Throws std::invalid_argument naming
  // UPPZY_HTTP_ADDR when it cannot listen.
  void Start(const std::string& addr, HealthSources sources = {});
  int port() const;
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy::http
