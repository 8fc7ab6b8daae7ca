// The HTTP transport of the mock: libmicrohttpd glue. What to answer is decided by MockApi; this file
// only collects the request, and delivers the answer now, later (suspend + ResumeTimer), or not at all.
//
// Why we run libmicrohttpd's event loop ourselves: in libmicrohttpd 0.9.75 (Debian 12), the internal
// epoll thread (MHD_USE_EPOLL_INTERNAL_THREAD) fetches at most 128 events per epoll_wait() and, when
// it got exactly 128, calls epoll_wait() again with the same blocking timeout (the idle-connection
// timeout, 300 s) before it processes the connections it just read. When exactly 128 (or 256, ...)
// keep-alive connections have a request ready at once, those requests sit read but unanswered until an
// unrelated event wakes the thread: the client sees "0 bytes received" timeouts. 64 connections never
// reach 128 ready events, 128 and 256 often hit them exactly (issue 15). So each server thread here
// runs one daemon without an internal thread (MHD_USE_EPOLL): it waits on the daemon's epoll fd for at
// most MHD_get_timeout(), then calls MHD_run(), which never blocks. libmicrohttpd does not wake an
// external loop when a connection is resumed, so Resume() writes the loop's own eventfd. The listen
// socket is ours, shared by every thread's daemon.
#include "mock/mock_server.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

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
  std::set<std::string_view> sites;
  for (const SiteKey& s : o.sites) {
    require(ValidSiteName(s.site), "sites: a site name is not valid");
    require(!s.key.empty(), "sites: a key must not be empty");
    require(sites.insert(s.site).second, "sites: a site is listed twice");
  }
  for (const auto& [site, limit] : o.rate_limits) {
    require(ValidSiteName(site), "rate_limits: a site name is not valid");
    require(sites.empty() || sites.count(site) != 0, "rate_limits: a site is not among sites");
    require(limit.per_second > 0 && limit.per_second <= 1e6, "rate_limits: per_second must be in (0, 1e6]");
    require(limit.burst >= 1, "rate_limits: burst must be >= 1");
  }
  require(o.ready_after_ms >= 0, "ready_after_ms must be >= 0");
  if (const std::optional<ReadyDist>& d = o.ready_dist) {
    bool lognormal_ok = d->median_ms > 0 && d->median_ms <= kMaxReadyMs && d->sigma >= 0 && d->sigma <= 5;
    bool uniform_ok = d->min_ms >= 0 && d->min_ms <= d->max_ms && d->max_ms <= kMaxReadyMs;
    require(d->kind == ReadyDist::Kind::kLognormal ? lognormal_ok : uniform_ok, "ready_dist is out of range");
  }
  require(o.request_log_capacity >= 1, "request_log_capacity must be >= 1");
  require(o.fault_rate_429 >= 0 && o.fault_rate_429 <= 1, "fault_rate_429 must be in [0, 1]");
  require(o.fault_rate_5xx >= 0 && o.fault_rate_5xx <= 1, "fault_rate_5xx must be in [0, 1]");
  require(o.latency_ms >= 0, "latency_ms must be >= 0");
  require(o.hang_max_ms >= 0, "hang_max_ms must be >= 0");
  require(o.threads >= 1 && o.threads <= 64, "threads must be in [1, 64]");
  require(o.connection_limit >= 1, "connection_limit must be >= 1");
  require(o.idle_timeout_s >= 1, "idle_timeout_s must be >= 1");
}

// Longest wait of a server thread between two MHD_run() calls; only bounds how late Stop() is seen.
constexpr int kMaxLoopWaitMs = 1000;
// Pending connections the kernel queues for accept(): bursts of connects never overflow it.
constexpr int kListenBacklog = 4096;

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
      : options_(std::move(options)), api_(options_), timer_([this](MHD_Connection* c) { Resume(c); }) {}

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
  int Listen(const sockaddr_storage& addr, socklen_t addr_len);
  MHD_Daemon* StartDaemon(unsigned flags);
  void RunLoop(size_t index);
  void StopLoops();
  // Resumes a suspended connection and wakes the server thread that owns it. Any thread.
  void Resume(MHD_Connection* connection);

  // One server thread and its daemon. Set up in Start() before any connection exists; read-only
  // until Stop().
  struct Loop {
    MHD_Daemon* daemon = nullptr;
    int resume_fd = -1;  // an eventfd: a connection of this daemon was resumed
    std::thread thread;
  };

  const MockOptions options_;
  MockApi api_;
  ResumeTimer timer_;
  std::vector<Loop> loops_;  // one per server thread; empty when stopped
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd, written once by Stop(): every loop sees it and exits
  std::atomic<bool> stopping_{false};
  int port_ = 0;

  std::mutex log_mu_;
  bool starting_ = false;    // guarded by log_mu_
  std::string start_error_;  // guarded by log_mu_
};

void MockServer::Impl::Start() {
  if (!loops_.empty()) throw std::runtime_error("uppzy-mock: already started");
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
  const socklen_t addr_len = found->ai_addrlen;
  std::memcpy(&addr, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);

  listen_fd_ = Listen(addr, addr_len);
  if (listen_fd_ < 0) {
    const std::string why = std::strerror(errno);
    throw std::runtime_error("uppzy-mock: cannot listen on " + options_.host + ":" + port_text + ": " + why);
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    throw std::runtime_error(std::string("uppzy-mock: eventfd: ") + std::strerror(errno));
  }
  stopping_ = false;

  unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  {
    std::lock_guard lock(log_mu_);
    starting_ = true;
    start_error_.clear();
  }
  timer_.Start();
  loops_.resize(options_.threads);
  bool started = true;
  for (Loop& loop : loops_) {
    loop.resume_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    loop.daemon = loop.resume_fd < 0 ? nullptr : StartDaemon(flags);
    if (loop.daemon == nullptr) {
      started = false;
      break;
    }
  }
  std::string error;
  {
    std::lock_guard lock(log_mu_);
    starting_ = false;
    error = start_error_;
  }
  if (!started) {
    StopLoops();
    throw std::runtime_error("uppzy-mock: cannot serve on " + options_.host + ":" + port_text +
                             (error.empty() ? "" : ": " + error));
  }
  for (size_t i = 0; i < loops_.size(); ++i) loops_[i].thread = std::thread([this, i] { RunLoop(i); });

  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

// A non-blocking listening socket with a large backlog, or -1 (errno set).
int MockServer::Impl::Listen(const sockaddr_storage& addr, socklen_t addr_len) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0 || listen(fd, kListenBacklog) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

MHD_Daemon* MockServer::Impl::StartDaemon(unsigned flags) {
  return MHD_start_daemon(flags, 0, nullptr, nullptr, &Impl::OnRequest, this,      //
                          MHD_OPTION_EXTERNAL_LOGGER, &Impl::OnLog, this,          //
                          MHD_OPTION_LISTEN_SOCKET, listen_fd_,                    //
                          MHD_OPTION_CONNECTION_LIMIT, options_.connection_limit,  //
                          MHD_OPTION_CONNECTION_TIMEOUT, options_.idle_timeout_s,  //
                          MHD_OPTION_NOTIFY_COMPLETED, &Impl::OnCompleted, this,   //
                          MHD_OPTION_END);
}

// One server thread: wait for the daemon's epoll fd (or Stop()), then let libmicrohttpd work without
// blocking. MHD_get_timeout() is 0 while a connection already has data read and not yet processed.
void MockServer::Impl::RunLoop(size_t index) {
  MHD_Daemon* daemon = loops_[index].daemon;
  const int resume_fd = loops_[index].resume_fd;
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
  pollfd fds[3] = {
      {info != nullptr ? info->epoll_fd : -1, POLLIN, 0}, {resume_fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stopping_.load(std::memory_order_relaxed)) {
    MHD_UNSIGNED_LONG_LONG due_ms = 0;
    int wait_ms = kMaxLoopWaitMs;
    if (MHD_get_timeout(daemon, &due_ms) == MHD_YES) {
      wait_ms = static_cast<int>(std::min<MHD_UNSIGNED_LONG_LONG>(due_ms, kMaxLoopWaitMs));
    }
    poll(fds, 3, wait_ms);
    if (stopping_.load(std::memory_order_relaxed)) break;
    if (fds[1].revents != 0) {
      uint64_t count = 0;
      [[maybe_unused]] ssize_t n = read(resume_fd, &count, sizeof count);  // reset before MHD_run
    }
    MHD_run(daemon);
  }
}

void MockServer::Impl::Resume(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_DAEMON);
  MHD_Daemon* daemon = info != nullptr ? info->daemon : nullptr;
  MHD_resume_connection(connection);
  for (const Loop& loop : loops_) {
    if (loop.daemon != daemon) continue;
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(loop.resume_fd, &one, sizeof one);
  }
}

// Stops the threads, then the daemons (which close every connection), then the listen socket.
void MockServer::Impl::StopLoops() {
  stopping_ = true;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  }
  for (Loop& loop : loops_) {
    if (loop.thread.joinable()) loop.thread.join();
  }
  for (Loop& loop : loops_) {
    if (loop.daemon != nullptr) {
      MHD_quiesce_daemon(loop.daemon);  // the listen socket is ours: the daemon must not close it
      MHD_stop_daemon(loop.daemon);
    }
    if (loop.resume_fd >= 0) close(loop.resume_fd);
  }
  loops_.clear();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  listen_fd_ = wake_fd_ = -1;
  timer_.StopAndFireAll();
}

void MockServer::Impl::Stop() {
  if (loops_.empty()) return;
  // Every suspended connection must be resumed before libmicrohttpd stops. Connections that a server
  // thread suspends from now on see Schedule() fail and resume themselves.
  timer_.StopAndFireAll();
  StopLoops();
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
    delay = options_.latency_fixed ? std::chrono::milliseconds(options_.latency_ms)
                                   : api_.RandomDelay(options_.latency_ms);
  }
  if (delay.count() == 0) return Deliver(connection, a);

  ex->body = std::string();  // free the body while the connection waits
  ex->pending = std::move(a);
  MHD_suspend_connection(connection);
  if (!timer_.Schedule(now + delay, connection)) Resume(connection);  // stopping
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

std::string MockServer::RequestsJson() const { return impl_->api().RequestsJson(); }

void MockServer::Reset() { impl_->api().Reset(); }

}  // namespace uppzy::mock
