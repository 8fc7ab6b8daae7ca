#include "http/health_server.h"

#include <httplib.h>

#include <stdexcept>
#include <thread>

namespace uppzy::http {

struct HealthServer::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
};

HealthServer::HealthServer() : impl_(std::make_unique<Impl>()) {}

HealthServer::~HealthServer() { Stop(); }

void HealthServer::Start(const std::string& addr) {
  const auto colon = addr.rfind(':');
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(addr.substr(colon + 1));
  impl_->server.set_tcp_nodelay(true);
  impl_->server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
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
