// libmicrohttpd glue for http::Server: collect one request, answer it on the polling thread or on the
// server's pool (the connection waits suspended meanwhile), enforce the body limit.
#include "http/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <strings.h>
#include <condition_variable>
#include <cstdarg>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

namespace uppzy::http {
namespace {

bool SameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string FormDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && HexDigit(s[i + 1]) >= 0 && HexDigit(s[i + 2]) >= 0) {
      out += static_cast<char>(HexDigit(s[i + 1]) * 16 + HexDigit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

Response JsonError(int status, const std::string& message) {
  Response r;
  r.status = status;
  r.content_type = "application/json; charset=utf-8";
  r.body = nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
           "\n";
  return r;
}

// A fixed set of threads that run queued jobs in order. Stop() runs what is queued, then joins.
class Pool {
 public:
  void Start(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }

  // False once Stop() has begun: the job was not queued.
  bool Submit(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
};

// One request in flight (libmicrohttpd's per-request context).
struct Exchange {
  Request request;
  size_t limit = 0;
  bool too_large = false;
  std::optional<Response> ready;  // set by a pool thread before it resumes the connection
};

MHD_Result CollectValue(void* out, MHD_ValueKind, const char* key, const char* value) {
  static_cast<NameValues*>(out)->emplace_back(key, value != nullptr ? value : "");
  return MHD_YES;
}

std::string PeerOf(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info == nullptr || info->client_addr == nullptr) return {};
  char buf[INET6_ADDRSTRLEN] = {};
  const sockaddr* sa = info->client_addr;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

}  // namespace

std::string Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (SameName(k, name)) return v;
  }
  return {};
}

std::vector<std::string> Request::Headers(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (SameName(k, name)) out.push_back(v);
  }
  return out;
}

std::optional<std::string> Request::Param(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return v;
  }
  return std::nullopt;
}

size_t Request::ParamCount(std::string_view name) const {
  size_t n = 0;
  for (const auto& [k, v] : query) n += k == name ? 1 : 0;
  return n;
}

NameValues ParseForm(std::string_view text) {
  NameValues out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('&', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(pos, end - pos);
    if (!part.empty()) {
      const size_t eq = part.find('=');
      out.emplace_back(FormDecode(part.substr(0, eq)),
                       eq == std::string_view::npos ? std::string() : FormDecode(part.substr(eq + 1)));
    }
    pos = end + 1;
  }
  return out;
}

void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

class Server::Impl {
 public:
  Impl(ServerOptions options, Handler handler) : options_(std::move(options)), handler_(std::move(handler)) {}

  void Start();
  void Stop();
  int port() const { return port_; }

 private:
  static MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                              const char* version, const char* upload_data, size_t* upload_data_size,
                              void** context);
  static void OnCompleted(void* cls, MHD_Connection* connection, void** context,
                          MHD_RequestTerminationCode code);
  static void OnLog(void* cls, const char* format, va_list ap);

  MHD_Result Begin(MHD_Connection* connection, const char* url, const char* method, void** context);
  MHD_Result Send(MHD_Connection* connection, const Response& r) const;
  Response Call(const Request& request) const;

  const ServerOptions options_;
  const Handler handler_;
  Pool pool_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  std::mutex log_mu_;
  bool starting_ = false;    // guarded by log_mu_
  std::string start_error_;  // guarded by log_mu_
};

void Server::Impl::Start() {
  if (daemon_ != nullptr) return;
  RaiseFileLimit();
  const std::string& addr = options_.listen;
  auto fail = [&](const std::string& why) {
    return std::invalid_argument(options_.setting + ": cannot listen on " + addr + ": " + why);
  };
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) throw fail("not host:port");
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port_text = addr.substr(colon + 1);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(), &hints, &found);
      rc != 0) {
    throw fail(gai_strerror(rc));
  }
  sockaddr_storage sa{};
  std::memcpy(&sa, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);

  // epoll, not select: descriptors above 1024 work and the cost of a poll does not grow with the
  // number of idle connections.
  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (sa.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  MHD_OptionItem extra[] = {
      {options_.per_ip_limit > 0 ? MHD_OPTION_PER_IP_CONNECTION_LIMIT : MHD_OPTION_END,
       static_cast<intptr_t>(options_.per_ip_limit), nullptr},
      {MHD_OPTION_END, 0, nullptr},
  };
  {
    std::lock_guard lock(log_mu_);
    starting_ = true;
    start_error_.clear();
  }
  pool_.Start(options_.handler_threads);
  daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &Impl::OnRequest, this,                    //
                             MHD_OPTION_EXTERNAL_LOGGER, &Impl::OnLog, this,                        //
                             MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&sa),                //
                             MHD_OPTION_CONNECTION_LIMIT, options_.connection_limit,                //
                             MHD_OPTION_CONNECTION_TIMEOUT, options_.idle_timeout_s,                //
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, options_.connection_memory_bytes,  //
                             MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,                                 //
                             MHD_OPTION_NOTIFY_COMPLETED, &Impl::OnCompleted, this,                 //
                             MHD_OPTION_ARRAY, extra,                                               //
                             MHD_OPTION_END);
  std::string error;
  {
    std::lock_guard lock(log_mu_);
    starting_ = false;
    error = start_error_;
  }
  if (daemon_ == nullptr) {
    pool_.Stop();
    throw fail(error.empty() ? "libmicrohttpd refused to start" : error);
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info != nullptr ? info->port : 0;
}

void Server::Impl::Stop() {
  if (daemon_ == nullptr) return;
  // Every suspended connection must be resumed before libmicrohttpd stops: the pool runs what is
  // queued (each job resumes its connection); a request completed from now on is answered 503.
  pool_.Stop();
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

MHD_Result Server::Impl::Send(MHD_Connection* connection, const Response& r) const {
  MHD_Response* response =
      MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  for (const auto& [name, value] : options_.default_headers) {
    MHD_add_response_header(response, name.c_str(), value.c_str());
  }
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
  for (const auto& [name, value] : r.headers) MHD_add_response_header(response, name.c_str(), value.c_str());
  const MHD_Result result = MHD_queue_response(connection, static_cast<unsigned>(r.status), response);
  MHD_destroy_response(response);
  return result;
}

Response Server::Impl::Call(const Request& request) const {
  try {
    return handler_(request);
  } catch (const std::exception&) {
    return JsonError(500, "internal error");
  }
}

MHD_Result Server::Impl::Begin(MHD_Connection* connection, const char* url, const char* method,
                               void** context) {
  auto ex = std::make_unique<Exchange>();
  Request& req = ex->request;
  req.method = method;
  req.path = url;
  MHD_get_connection_values(connection, MHD_HEADER_KIND, &CollectValue, &req.headers);
  MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &CollectValue, &req.query);
  req.peer = PeerOf(connection);
  ex->limit = options_.body_limit ? options_.body_limit(req) : options_.max_body_bytes;
  std::optional<Response> early;
  if (options_.on_headers) {
    try {
      early = options_.on_headers(req);
    } catch (const std::exception&) {
      early = JsonError(500, "internal error");
    }
  }
  // Content-Length already says it is too large: refuse before reading it (libmicrohttpd closes the
  // connection after the answer rather than read the rest).
  const std::string length = req.Header("Content-Length");
  if (!early && !length.empty()) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(length.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && n > ex->limit) ex->too_large = true;
  }
  if (!early && ex->too_large) {
    early = JsonError(413, "request body too large: at most " + std::to_string(ex->limit) + " bytes for " +
                               req.method + " " + req.path);
  }
  *context = ex.release();
  if (early) return Send(connection, *early);
  return MHD_YES;
}

MHD_Result Server::Impl::OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                                   const char*, const char* upload_data, size_t* upload_data_size,
                                   void** context) {
  auto* self = static_cast<Impl*>(cls);
  auto* ex = static_cast<Exchange*>(*context);
  if (ex == nullptr) return self->Begin(connection, url, method, context);  // headers received
  if (*upload_data_size != 0) {                                             // a piece of the body
    if (!ex->too_large && ex->request.body.size() + *upload_data_size > ex->limit) {
      ex->too_large = true;
      ex->request.body = std::string();
    }
    if (!ex->too_large) ex->request.body.append(upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (ex->ready) return self->Send(connection, *ex->ready);  // resumed: the pool's answer
  if (ex->too_large) {
    return self->Send(connection,
                      JsonError(413, "request body too large: at most " + std::to_string(ex->limit) +
                                         " bytes for " + ex->request.method + " " + ex->request.path));
  }
  if (self->options_.handler_threads == 0) return self->Send(connection, self->Call(ex->request));
  // Suspend first: the pool may finish and resume before this function returns.
  MHD_suspend_connection(connection);
  const bool queued = self->pool_.Submit([self, connection, ex] {
    ex->ready = self->Call(ex->request);
    MHD_resume_connection(connection);
  });
  if (!queued) {
    ex->ready = JsonError(503, "the server is stopping");
    MHD_resume_connection(connection);
  }
  return MHD_YES;
}

void Server::Impl::OnCompleted(void*, MHD_Connection*, void** context, MHD_RequestTerminationCode) {
  delete static_cast<Exchange*>(*context);
  *context = nullptr;
}

void Server::Impl::OnLog(void* cls, const char* format, va_list ap) {
  auto* self = static_cast<Impl*>(cls);
  std::lock_guard lock(self->log_mu_);
  if (!self->starting_) return;  // afterwards: client disconnects and the like, not worth a line
  char buf[512];
  std::vsnprintf(buf, sizeof buf, format, ap);
  std::string line(buf);
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  if (!self->start_error_.empty()) self->start_error_ += "; ";
  self->start_error_ += line;
}

Server::Server(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

Server::~Server() { Stop(); }

void Server::Start() { impl_->Start(); }

int Server::port() const { return impl_->port(); }

void Server::Stop() { impl_->Stop(); }

}  // namespace uppzy::http
