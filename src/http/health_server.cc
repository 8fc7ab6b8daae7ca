#include "http/health_server.h"

#include <httplib.h>

#include <stdexcept>
#include <thread>

#include "uppzy/metrics.h"

namespace uppzy::http {

struct HealthServer::Impl {
  httplib::Server server;
  HealthSources sources;
  std::thread thread;
  int port = 0;
};

HealthServer::HealthServer() : impl_(std::make_unique<Impl>()) {}

HealthServer::~HealthServer() { Stop(); }

void HealthServer::Start(const std::string& addr, HealthSources sources) {
  impl_->sources = std::move(sources);
  metrics::WorkerMetrics::Get();  // every worker series exists from the first scrape
  const auto colon = addr.rfind(':');
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(addr.substr(colon + 1));
  impl_->server.set_tcp_nodelay(true);
  impl_->server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  impl_->server.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (!impl_->sources.ready) {
      res.set_content("{\"status\":\"ready\"}", "application/json");
      return;
    }
    auto [ready, body] = impl_->sources.ready();
    res.status = ready ? 200 : 503;
    res.set_content(body + "\n", "application/json");
  });
  impl_->server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::string body;
    if (impl_->sources.counters) body = metrics::RenderWorkerCounters(*impl_->sources.counters);
    body += metrics::Default().Render();
    res.set_content(body, "text/plain; version=0.0.4; charset=utf-8");
  });
  impl_->port =
      port == 0 ? impl_->server.bind_to_any_port(host) : (impl_->server.bind_to_port(host, port) ? port : -1);
  if (impl_->port < 0) throw std::invalid_argument("UPPZY_HTTP_ADDR: cannot listen on " + addr);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

int HealthServer::port() const { return impl_->port; }

void HealthServer::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace uppzy::http
