// The HTTP transport of the mock: libmicrohttpd glue. What to answer is decided by MockApi; this file
// only collects the request, and delivers the answer now, later (suspend + ResumeTimer), or not at all.
#include "mock/mock_server.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "mock/mock_api.h"
#include "mock/resume_timer.h"

namespace uppzy::mock {
namespace {

// One HTTP request in flight (libmicrohttpd's per-request context).
struct Exchange {
  std::string body;
  bool too_large = false;
  std::optional<Answer> pending;  // set while the connection is suspended
};

constexpr char kGarbageBody[] = "<html><body>this is not JSON {\"status\":</body></html>";
constexpr std::string_view kHugePrefix = "{\"padding\":\"";
constexpr std::string_view kHugeSuffix = "\"}";

// Streams the `huge` body: a JSON object of exactly kHugeBodyBytes, without allocating it.
ssize_t ReadHuge(void*, uint64_t pos, char* buf, size_t max) {
  if (pos >= kHugeBodyBytes) return MHD_CONTENT_READER_END_OF_STREAM;
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, kHugeBodyBytes - pos));
  std::memset(buf, 'x', n);
  for (size_t i = pos; i < kHugePrefix.size() && i < pos + n; ++i) buf[i - pos] = kHugePrefix[i];
  uint64_t suffix_at = kHugeBodyBytes - kHugeSuffix.size();
  for (uint64_t i = std::max(pos, suffix_at); i < pos + n; ++i) buf[i - pos] = kHugeSuffix[i - suffix_at];
  return static_cast<ssize_t>(n);
}

MHD_Result Deliver(MHD_Connection* connection, const Answer& a) {
  MHD_Response* response = nullptr;
  const char* content_type = "application/json";
  switch (a.kind) {
    case Answer::Kind::kReset:
    case Answer::Kind::kHang:
      return MHD_NO;  // libmicrohttpd closes the connection without a response
    case Answer::Kind::kGarbage:
      response = MHD_create_response_from_buffer(sizeof kGarbageBody - 1, const_cast<char*>(kGarbageBody),
                                                 MHD_RESPMEM_PERSISTENT);
      break;
    case Answer::Kind::kHuge:
      response = MHD_create_response_from_callback(kHugeBodyBytes, 64 * 1024, &ReadHuge, nullptr, nullptr);
      break;
    case Answer::Kind::kJson:
      response = MHD_create_response_from_buffer(a.body.size(), const_cast<char*>(a.body.data()),
                                                 MHD_RESPMEM_MUST_COPY);
      break;
  }
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (a.retry_after_s >= 0) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, std::to_string(a.retry_after_s).c_str());
  }
  if (a.allow != nullptr) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, a.allow);
  unsigned status = a.kind == Answer::Kind::kJson ? a.status : MHD_HTTP_OK;
  MHD_Result result = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return result;
}

void Validate(const MockOptions& o) {
  auto require = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("uppzy::mock::MockOptions: ") + what);
  };
  require(!o.api_key.empty(), "api_key must not be empty");
  require(o.ready_after_ms >= 0, "ready_after_ms must be >= 0");
  require(o.fault_rate_429 >= 0 && o.fault_rate_429 <= 1, "fault_rate_429 must be in [0, 1]");
  require(o.fault_rate_5xx >= 0 && o.fault_rate_5xx <= 1, "fault_rate_5xx must be in [0, 1]");
  require(o.latency_ms >= 0, "latency_ms must be >= 0");
  require(o.hang_max_ms >= 0, "hang_max_ms must be >= 0");
  require(o.threads >= 1 && o.threads <= 64, "threads must be in [1, 64]");
  require(o.connection_limit >= 1, "connection_limit must be >= 1");
  require(o.idle_timeout_s >= 1, "idle_timeout_s must be >= 1");
}

// Lets this process hold as many sockets as its hard limit allows.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

class MockServer::Impl {
 public:
  explicit Impl(MockOptions options)
      : options_(std::move(options)),
        api_(options_),
        timer_([](MHD_Connection* c) { MHD_resume_connection(c); }) {}

  void Start();
  void Stop();
  int port() const { return port_; }
  MockApi& api() { return api_; }

 private:
  static MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                              const char* version, const char* upload_data, size_t* upload_data_size,
                              void** context);
  static void OnCompleted(void* cls, MHD_Connection* connection, void** context,
                          MHD_RequestTerminationCode code);
  static void OnLog(void* cls, const char* format, va_list ap);

  MHD_Result Respond(MHD_Connection* connection, const char* url, const char* method, Exchange* ex);

  const MockOptions options_;
  MockApi api_;
  ResumeTimer timer_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  std::mutex log_mu_;
  bool starting_ = false;    // guarded by log_mu_
  std::string start_error_;  // guarded by log_mu_
};

void MockServer::Impl::Start() {
  if (daemon_ != nullptr) throw std::runtime_error("uppzy-mock: already started");
  Validate(options_);
  RaiseFileLimit();

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string port_text = std::to_string(options_.port);
  if (int rc = getaddrinfo(options_.host.c_str(), port_text.c_str(), &hints, &found); rc != 0) {
    throw std::runtime_error("uppzy-mock: cannot resolve host " + options_.host + ": " + gai_strerror(rc));
  }
  sockaddr_storage addr{};
  std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);

  unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  MHD_OptionItem pool[] = {
      {options_.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, options_.threads, nullptr},
      {MHD_OPTION_END, 0, nullptr},
  };
  {
    std::lock_guard lock(log_mu_);
    starting_ = true;
    start_error_.clear();
  }
  timer_.Start();
  daemon_ = MHD_start_daemon(flags, options_.port, nullptr, nullptr, &Impl::OnRequest, this,  //
                             MHD_OPTION_EXTERNAL_LOGGER, &Impl::OnLog, this,                  //
                             MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&addr),        //
                             MHD_OPTION_CONNECTION_LIMIT, options_.connection_limit,          //
                             MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,                           //
                             MHD_OPTION_CONNECTION_TIMEOUT, options_.idle_timeout_s,          //
                             MHD_OPTION_NOTIFY_COMPLETED, &Impl::OnCompleted, this,           //
                             MHD_OPTION_ARRAY, pool,                                          //
                             MHD_OPTION_END);
  std::string error;
  {
    std::lock_guard lock(log_mu_);
    starting_ = false;
    error = start_error_;
  }
  if (daemon_ == nullptr) {
    timer_.StopAndFireAll();
    throw std::runtime_error("uppzy-mock: cannot listen on " + options_.host + ":" + port_text +
                             (error.empty() ? "" : ": " + error));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info != nullptr ? info->port : options_.port;
}

void MockServer::Impl::Stop() {
  if (daemon_ == nullptr) return;
  // Every suspended connection must be resumed before libmicrohttpd stops. Connections that a server
  // thread suspends from now on see Schedule() fail and resume themselves.
  timer_.StopAndFireAll();
  MHD_stop_daemon(daemon_);
  daemon_ = nullptr;
}

MHD_Result MockServer::Impl::OnRequest(void* cls, MHD_Connection* connection, const char* url,
                                       const char* method, const char*, const char* upload_data,
                                       size_t* upload_data_size, void** context) {
  auto* self = static_cast<Impl*>(cls);
  auto* ex = static_cast<Exchange*>(*context);
  if (ex == nullptr) {  // headers received
    *context = new Exchange;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {  // a piece of the body
    if (ex->body.size() + *upload_data_size > kMaxBodyBytes) {
      ex->too_large = true;
      ex->body.clear();
    }
    if (!ex->too_large) ex->body.append(upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (ex->pending) {  // resumed: the delayed answer is due
    Answer a = std::move(*ex->pending);
    ex->pending.reset();
    return Deliver(connection, a);
  }
  return self->Respond(connection, url, method, ex);
}

MHD_Result MockServer::Impl::Respond(MHD_Connection* connection, const char* url, const char* method,
                                     Exchange* ex) {
  ApiRequest request;
  request.method = method;
  request.path = url;
  if (const char* key = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-API-Key")) {
    request.api_key = key;
  }
  request.body = ex->body;
  request.body_too_large = ex->too_large;

  auto now = std::chrono::steady_clock::now();
  Answer a = api_.Handle(request, now);
  std::chrono::milliseconds delay(0);
  if (a.kind == Answer::Kind::kHang) {
    delay = std::chrono::milliseconds(options_.hang_max_ms);
    a.kind = Answer::Kind::kReset;  // when resumed: close without a response
  } else if (a.delayable) {
    delay = api_.RandomDelay(options_.latency_ms);
  }
  if (delay.count() == 0) return Deliver(connection, a);

  ex->body = std::string();  // free the body while the connection waits
  ex->pending = std::move(a);
  MHD_suspend_connection(connection);
  if (!timer_.Schedule(now + delay, connection)) MHD_resume_connection(connection);  // stopping
  return MHD_YES;
}

void MockServer::Impl::OnCompleted(void*, MHD_Connection*, void** context, MHD_RequestTerminationCode) {
  delete static_cast<Exchange*>(*context);
  *context = nullptr;
}

void MockServer::Impl::OnLog(void* cls, const char* format, va_list ap) {
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

MockServer::MockServer(MockOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

MockServer::~MockServer() { Stop(); }

void MockServer::Start() { impl_->Start(); }

int MockServer::port() const { return impl_->port(); }

void MockServer::Stop() { impl_->Stop(); }

std::string MockServer::StatsJson() const { return impl_->api().StatsJson(std::chrono::steady_clock::now()); }

void MockServer::Reset() { impl_->api().Reset(); }

}  // namespace uppzy::mock
