// A small HTTP/1.1 server on libmicrohttpd, shared by the worker's endpoint (health_server.cc) and the
// operators' dashboard (src/dashboard). It is event-driven: one internal thread watches every
// socket with epoll, so an idle or slow client holds a socket and a little memory, never a thread.
// A request reaches the handler only once its headers and body are complete.
//
// Limits (ServerOptions): idle/slow connections are closed after `idle_timeout_s` without progress;
// at most `connection_limit` connections at once (more wait in the kernel's listen queue); headers and
// the read buffer of one connection fit in `connection_memory_bytes` (larger headers are refused); a body
// above the route's limit gets 413 with a JSON error, before it is read when Content-Length says so.
//
// Threads: with `handler_threads` = 0 the handler runs on the polling thread and must not block (the
// worker's endpoint answers from caches). With N > 0 it runs on a pool of N threads of this server
// alone while the connection waits suspended, so a slow handler (a database query) delays only the
// requests queued behind it, and a client cannot hold a pool thread: it gets one only after its
// request is complete. `on_headers` always runs on the polling thread and must not block.
//
// Start() and Stop() are called from one thread. The handlers may be called concurrently from the pool.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace uppzy::http {

using NameValues = std::vector<std::pair<std::string, std::string>>;

// One complete request. Plain value.
struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded, without the query
  NameValues query;    // decoded query parameters in order; a name given twice appears twice
  NameValues headers;  // as received
  std::string body;    // empty in on_headers
  std::string peer;    // the client's IP address ("127.0.0.1", "::1")

  // The first header of that name (case-insensitive); "" when absent.
  std::string Header(std::string_view name) const;
  // Every header of that name, in order.
  std::vector<std::string> Headers(std::string_view name) const;
  // The first query parameter of that name (case-sensitive); nullopt when absent.
  std::optional<std::string> Param(std::string_view name) const;
  size_t ParamCount(std::string_view name) const;
};

// One answer. Plain value.
struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  NameValues headers;  // extra headers (Location, Set-Cookie, ...)
  std::string body;
};

// Decodes application/x-www-form-urlencoded text ("a=1&b=x+y%21"); a name without '=' has value "".
NameValues ParseForm(std::string_view text);

using Handler = std::function<Response(const Request&)>;

struct ServerOptions {
  std::string setting = "listen address";      // named in Start()'s error, e.g. "UPPZY_HTTP_ADDR"
  std::string listen;                          // "host:port", "[::1]:port"; port 0 picks a free one
  int handler_threads = 0;                     // 0: handlers run on the polling thread (see above)
  unsigned connection_limit = 4096;            // open connections at once
  unsigned per_ip_limit = 0;                   // connections from one address; 0: no limit
  unsigned idle_timeout_s = 10;                // a connection that makes no progress this long is closed
  size_t connection_memory_bytes = 32 * 1024;  // per connection: headers and read buffer
  size_t max_body_bytes = 16 * 1024;           // body limit when `body_limit` is null
  // The body limit of one request, chosen from its method and path (body still empty).
  std::function<size_t(const Request&)> body_limit;
  // Called once the headers are in, before the body is read: an answer here ends the request without
  // reading the body (refusals, cheap answers). Null or nullopt: go on.
  std::function<std::optional<Response>(const Request&)> on_headers;
  NameValues default_headers;  // added to every response, also the server's own 413s and 503s
};

class Server {
 public:
  Server(ServerOptions options, Handler handler);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Raises this process's open-file limit (RaiseFileLimit), binds and starts serving. Throws
  // std::invalid_argument "<setting>: cannot listen on <listen>: <reason>" when it cannot.
  void Start();
  // The bound port (after Start).
  int port() const;
  // Stops accepting, lets queued handlers finish, closes every connection. Idempotent.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit, so one process can hold thousands of sockets.
// Best effort: never throws.
void RaiseFileLimit();

}  // namespace uppzy::http
