#include "uppzy/health_server.h"

#include <stdexcept>

#include "http/server.h"
#include "uppzy/metrics.h"

namespace uppzy::http {

struct HealthServer::Impl {
  HealthSources sources;
  std::unique_ptr<Server> server;

  Response Handle(const Request& req) const {
    Response res;
    res.content_type = "application/json";
    const bool get = req.method == "GET" || req.method == "HEAD";
    if (get && req.path == "/healthz") {
      res.body = "{\"status\":\"ok\"}";
    } else if (get && req.path == "/readyz") {
      if (!sources.ready) {
        res.body = "{\"status\":\"ready\"}";
      } else {
        auto [ready, body] = sources.ready();
        res.status = ready ? 200 : 503;
        res.body = body + "\n";
      }
    } else if (get && req.path == "/metrics") {
      if (sources.metrics) res.body = metrics::Exposition(*sources.metrics);
      res.content_type = metrics::kExpositionContentType;
    } else {
      res.status = 404;
      res.body = "{\"error\":\"not found: GET /healthz, /readyz or /metrics\"}\n";
    }
    return res;
  }
};

HealthServer::HealthServer() : impl_(std::make_unique<Impl>()) {}

HealthServer::~HealthServer() { Stop(); }

void HealthServer::Start(const std::string& addr, HealthSources sources) {
  impl_->sources = std::move(sources);
  ServerOptions o;
  o.setting = "UPPZY_HTTP_ADDR";
  o.listen = addr;
  // Every answer comes from memory (ready() answers from a cache), so the polling thread answers
  // itself: this endpoint has no pool that a slow client or another component could fill.
  o.handler_threads = 0;
  o.max_body_bytes = 4 * 1024;  // nothing here takes a body
  impl_->server =
      std::make_unique<Server>(std::move(o), [this](const Request& req) { return impl_->Handle(req); });
  impl_->server->Start();
}

int HealthServer::port() const { return impl_->server ? impl_->server->port() : 0; }

void HealthServer::Stop() {
  if (impl_->server) impl_->server->Stop();
}

}  // namespace uppzy::http
