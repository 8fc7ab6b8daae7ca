#include "support/tls_front.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace uppzy::test {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

bool Executable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

}  // namespace

std::string TlsFront::Unavailable() {
  const bool nginx = Executable("/usr/sbin/nginx");
  const bool openssl = Executable("/usr/bin/openssl");
  if (nginx && openssl) return "";
  return std::string("TLS tests need ") + (nginx ? "" : "nginx ") + (openssl ? "" : "openssl ") +
         "(scripts/install-deps installs them)";
}

TlsFront::TlsFront(const MockProcess& mock, bool http2, Cert cert) {
  char tmpl[] = "/tmp/uppzy-tls-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  const std::string upstream = mock.root().substr(mock.root().rfind(':') + 1);
  std::vector<std::string> argv = {"/bin/bash", std::string(UPPZY_SOURCE_DIR) + "/scripts/tls-front", dir_,
                                   upstream, "--cert"};
  argv.push_back(cert == Cert::kGood ? "good" : cert == Cert::kWrongHost ? "wrong-host" : "unknown-ca");
  if (http2) argv.push_back("--http2");
  // The port is picked free just before nginx binds it: another process may win it; then try again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::filesystem::remove(dir_ + "/port");
    nginx_ = std::make_unique<Process>(argv, std::map<std::string, std::string>{});
    const bool up = WaitFor(
        [&] {
          if (!nginx_->Running()) return true;
          const std::string text = Slurp(dir_ + "/port");
          if (text.empty()) return false;
          port_ = std::stoi(text);
          return Accepts(port_);
        },
        std::chrono::seconds(30));
    if (up && nginx_->Running()) return;
  }
  const std::string log = nginx_->Log() + ErrorLog();
  nginx_.reset();
  throw std::runtime_error("nginx (scripts/tls-front) did not start:\n" + log);
}

TlsFront::~TlsFront() {
  if (nginx_) {
    nginx_->Signal(SIGTERM);
    if (nginx_->Wait(std::chrono::seconds(5)) < 0) nginx_.reset();  // SIGKILL
  }
  nginx_.reset();
  if (std::getenv("UPPZY_TEST_KEEP_LOGS") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string TlsFront::base_url() const { return "https://localhost:" + std::to_string(port_) + "/api/v1"; }

std::string TlsFront::ca_file() const { return dir_ + "/ca.pem"; }

long TlsFront::Requests(const std::string& protocol) const {
  std::ifstream in(dir_ + "/access.log");
  long n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(protocol + " ", 0) == 0) ++n;
  }
  return n;
}

std::string TlsFront::ErrorLog() const { return Slurp(dir_ + "/error.log"); }

}  // namespace uppzy::test
