#include "dashboard/dashboard_server.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dashboard/assets.h"
#include "dashboard/dashboard_api.h"
#include "dashboard/params.h"
#include "dashboard/sessions.h"
#include "http/server.h"
#include "uppzy/config.h"
#include "uppzy/error_text.h"
#include "uppzy/log.h"

namespace uppzy::dashboard {
namespace {

using http::Request;
using http::Response;
using http::Server;
using http::ServerOptions;

constexpr const char* kReadOnlyError =
    "read-only: this dashboard was started without UPPZY_DASHBOARD_TOKEN, so it cannot retry, cancel or "
    "resolve";
// Threads that run /api/* and POST /login (database work, the login delay). Clients cannot hold
// them: a request reaches one only when it is complete (server.h). Pages, assets and /healthz are
// answered by the polling thread.
constexpr int kHandlerThreads = 8;
// Bodies: an action with 10,000 ids (kMaxActionBodyBytes); anything else is small (the login form).
constexpr size_t kSmallBodyBytes = 16 * 1024;

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  for (size_t pos = s->find(from); pos != std::string::npos; pos = s->find(from, pos + to.size())) {
    s->replace(pos, from.size(), to);
  }
}

// Host header -> host name without port and brackets.
std::string HostName(const std::string& host_header) {
  if (!host_header.empty() && host_header.front() == '[') {
    const auto end = host_header.find(']');
    return end == std::string::npos ? host_header : host_header.substr(1, end - 1);
  }
  const auto colon = host_header.find(':');
  if (colon != std::string::npos && host_header.find(':', colon + 1) == std::string::npos) {
    return host_header.substr(0, colon);
  }
  return host_header;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

void SetHeader(Response& res, std::string name, std::string value) {
  res.headers.emplace_back(std::move(name), std::move(value));
}

using RouteFn = std::function<void(const Request&, const std::smatch&, Response&)>;

struct Route {
  std::string method;
  std::regex pattern;  // the whole path must match
  RouteFn fn;
};

}  // namespace

struct DashboardServer::Impl {
  explicit Impl(DashboardOptions o)
      : options(std::move(o)),
        pool(options.database_url, options.db_connections),
        overview([this] { return api.ComputeOverview(); },
                 [this](const std::string& full) { return api.PatchOverview(full); },
                 std::chrono::milliseconds(options.overview_cache_ms)),
        api(options, pool, overview),
        sessions(options.token) {}

  DashboardOptions options;
  StorePool pool;
  OverviewSnapshots overview;
  DashboardApi api;
  std::vector<Route> routes;
  std::unique_ptr<Server> server;
  Sessions sessions;

  std::mutex serve_mu;
  std::condition_variable serve_cv;
  bool stopped = false;  // guarded by serve_mu

  bool read_only() const { return options.token.empty(); }

  // ---- Gatekeeping, before any route and before the body is read ---------------------------------

  std::optional<Response> Gate(const Request& req) {
    Response res;
    const std::string& path = req.path;
    const bool api_path = StartsWith(path, "/api/");
    if (read_only()) {
      // Loopback only: refuse other Host names (DNS rebinding).
      const std::string host = HostName(req.Header("Host"));
      if (!host.empty() && !IsLoopbackHost(host)) {
        SendError(res, 403, "this dashboard answers only requests for 127.0.0.1 or localhost");
        return res;
      }
    }
    if (req.method == "POST" && !Sessions::SameOrigin(req)) {
      SendError(res, 403, "cross-origin request refused");
      return res;
    }
    const bool open =
        path == "/healthz" || path == "/login" || path == "/favicon.ico" || StartsWith(path, "/static/");
    const Caller caller = sessions.Identify(req);
    if (!read_only() && !open && !caller.authenticated) {
      if (api_path || req.method != "GET") {
        SendError(res, 401, "sign in first (the login form at /login, or Authorization: Bearer <token>)");
      } else {
        res.status = 303;
        SetHeader(res, "Location", "/login");
      }
      return res;
    }
    if (req.method == "POST" && path != "/login") {
      if (read_only()) {
        SendError(res, 403, kReadOnlyError);
        return res;
      }
      if (!Sessions::CsrfOk(req, caller)) {
        SendError(res, 403, "missing or wrong X-CSRF-Token header (reload the page)");
        return res;
      }
    }
    return std::nullopt;
  }

  // Runs on the polling thread once the headers are in: the gate, then every GET that needs no
  // database (pages, assets, /healthz) at once. The rest goes to the pool with its body.
  std::optional<Response> OnHeaders(const Request& req) {
    if (auto refused = Gate(req)) return Finish(req, std::move(*refused));
    const bool get = req.method == "GET" || req.method == "HEAD";
    if (get && !StartsWith(req.path, "/api/")) return Handle(req);
    return std::nullopt;
  }

  // ---- Pages ------------------------------------------------------------------------------------

  void SendPage(const Request& req, Response& res, assets::Page page, const std::string& title,
                const std::string& page_name, std::string_view extra = {}) {
    const Caller caller = sessions.Identify(req);
    std::string html(assets::Layout());
    std::string banner;
    std::string session;
    if (read_only()) {
      banner =
          "<div class=\"banner readonly\" id=\"mode-banner\" role=\"status\"><strong>Read-only.</strong> "
          "Retry, "
          "cancel and resolve are turned off: start the dashboard with UPPZY_DASHBOARD_TOKEN to use "
          "them.</div>";
    } else if (caller.authenticated) {
      session = "<button type=\"button\" id=\"sign-out\" class=\"link\">Sign out</button>";
    }
    std::string body(assets::Body(page));
    ReplaceAll(&body, "{{extra}}", extra);
    ReplaceAll(&html, "{{title}}", HtmlEscape(title));
    ReplaceAll(&html, "{{page}}", page_name);
    ReplaceAll(&html, "{{mode}}", read_only() ? "read-only" : "actions");
    ReplaceAll(&html, "{{show_text}}", options.show_text ? "1" : "0");
    ReplaceAll(&html, "{{csrf}}", HtmlEscape(caller.csrf));
    ReplaceAll(&html, "{{banner}}", banner);
    ReplaceAll(&html, "{{session}}", session);
    ReplaceAll(&html, "{{body}}", body);
    res.content_type = "text/html; charset=utf-8";
    res.body = std::move(html);
  }

  // ---- Routes -----------------------------------------------------------------------------------

  void Add(const char* method, const char* pattern, RouteFn fn) {
    routes.push_back(Route{method, std::regex(pattern), std::move(fn)});
  }

  static void SendAsset(Response& res, std::string_view path) {
    const assets::Asset* a = assets::Find(path);
    res.content_type = std::string(a->content_type);
    res.body = std::string(a->body);
  }

  void Routes() {
    Add("GET", "/healthz", [](const Request&, const std::smatch&, Response& res) {
      res.content_type = "application/json";
      res.body = "{\"status\":\"ok\"}\n";
    });
    Add("GET", "/static/(app\\.js|app\\.css|icon\\.svg)",
        [](const Request& req, const std::smatch&, Response& res) { SendAsset(res, req.path); });
    Add("GET", "/favicon.ico",
        [](const Request&, const std::smatch&, Response& res) { SendAsset(res, "/static/icon.svg"); });

    Add("GET", "/", [this](const Request& req, const std::smatch&, Response& res) {
      SendPage(req, res, assets::Page::kOverview, "Overview", "overview");
    });
    Add("GET", "/jobs", [this](const Request& req, const std::smatch&, Response& res) {
      SendPage(req, res, assets::Page::kJobs, "Jobs", "jobs");
    });
    Add("GET", "/jobs/([^/]+)", [this](const Request& req, const std::smatch& m, Response& res) {
      auto id = ParseId(m[1].str());
      if (!id) {
        res.status = 404;
        res.body = "not found\n";
        return;
      }
      SendPage(req, res, assets::Page::kJob, "Job " + std::to_string(*id), "job");
    });

    Add("GET", "/login", [this](const Request& req, const std::smatch&, Response& res) {
      if (read_only() || sessions.Identify(req).authenticated) {
        res.status = 303;
        SetHeader(res, "Location", "/");
        return;
      }
      SendPage(req, res, assets::Page::kLogin, "Sign in", "login");
    });
    Add("POST", "/login", [this](const Request& req, const std::smatch&, Response& res) { Login(req, res); });
    Add("POST", "/logout", [this](const Request& req, const std::smatch&, Response& res) {
      SetHeader(res, "Set-Cookie", sessions.Close(sessions.Identify(req)));
      SendJson(res, 200, json{{"signed_out", true}});
    });

    Add("GET", "/api/overview",
        [this](const Request&, const std::smatch&, Response& res) { api.Overview(res); });
    Add("GET", "/api/jobs",
        [this](const Request& req, const std::smatch&, Response& res) { api.JobsList(req, res); });
    Add("GET", "/api/jobs/([^/]+)",
        [this](const Request&, const std::smatch& m, Response& res) { api.JobGet(m[1].str(), res); });
    Add("POST", "/api/jobs/(?:([^/]+)/)?(retry|cancel)",
        [this](const Request& req, const std::smatch& m, Response& res) {
          api.JobsAct(req, res, m[2].str() == "retry", m[1].matched ? m[1].str() : std::string());
        });
    Add("POST", "/api/incidents/([^/]+)/resolve",
        [this](const Request&, const std::smatch& m, Response& res) {
          api.IncidentResolve(m[1].str(), res);
        });
  }

  void Login(const Request& req, Response& res) {
    if (read_only()) {
      SendError(res, 403, kReadOnlyError);
      return;
    }
    std::string token;
    for (const auto& [name, value] : http::ParseForm(req.body)) {
      if (name == "token") {
        token = value;
        break;
      }
    }
    if (token.empty()) token = req.Param("token").value_or("");
    if (token.empty() || !sessions.TokenMatches(token)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // slows guessing
      LogEvent(spdlog::level::warn, "dashboard_login_refused", {{"remote_addr", req.peer}});
      res.status = 401;
      SendPage(req, res, assets::Page::kLogin, "Sign in", "login",
               "<p class=\"error\" id=\"login-error\" role=\"alert\">That token is not right.</p>");
      return;
    }
    const std::string cookie = sessions.Open();
    LogEvent(spdlog::level::info, "dashboard_login", {{"remote_addr", req.peer}});
    res.status = 303;
    SetHeader(res, "Set-Cookie", cookie);
    SetHeader(res, "Location", "/");
  }

  // One request through the routes; exceptions become a 500 (logged).
  Response Handle(const Request& req) {
    Response res;
    try {
      const std::string method = req.method == "HEAD" ? "GET" : req.method;
      bool found = false;
      std::smatch m;
      for (const Route& r : routes) {
        if (r.method == method && std::regex_match(req.path, m, r.pattern)) {
          r.fn(req, m, res);
          found = true;
          break;
        }
      }
      if (!found) {
        res.status = 404;
        if (StartsWith(req.path, "/api/")) {
          SendError(res, 404, "no such endpoint: " + req.method + " " + req.path.substr(0, 200));
        } else {
          res.body = "not found\n";
        }
      }
    } catch (const std::exception& e) {
      LogEvent(spdlog::level::err, "dashboard_internal_error",
               {{"path", req.path}, {"error", FirstLine(e.what())}});
      res = Response{};
      SendError(res, 500, "internal error");
    }
    return Finish(req, std::move(res));
  }

  static Response Finish(const Request& req, Response res) {
    LogEvent(spdlog::level::debug, "dashboard_request",
             {{"method", req.method}, {"path", req.path}, {"http_status", std::to_string(res.status)}});
    return res;
  }
};

DashboardServer::DashboardServer(DashboardOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

DashboardServer::~DashboardServer() { Stop(); }

void DashboardServer::Start() {
  Impl& s = *impl_;
  s.Routes();
  ServerOptions o;
  o.setting = "UPPZY_DASHBOARD_ADDR";
  o.listen = s.options.listen;
  o.handler_threads = kHandlerThreads;
  o.body_limit = [](const Request& req) {
    const bool action = req.path == "/api/jobs/retry" || req.path == "/api/jobs/cancel";
    return action ? kMaxActionBodyBytes : kSmallBodyBytes;
  };
  o.on_headers = [this](const Request& req) { return impl_->OnHeaders(req); };
  o.default_headers = {
      {"Content-Security-Policy",
       "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "same-origin"},
      {"Cache-Control", "no-store"},
  };
  s.server =
      std::make_unique<Server>(std::move(o), [this](const Request& req) { return impl_->Handle(req); });
  s.server->Start();
  s.overview.Start();
}

int DashboardServer::port() const { return impl_->server ? impl_->server->port() : 0; }

void DashboardServer::Serve() {
  std::unique_lock lock(impl_->serve_mu);
  impl_->serve_cv.wait(lock, [&] { return impl_->stopped; });
}

void DashboardServer::Stop() {
  if (impl_->server) impl_->server->Stop();
  impl_->overview.Stop();
  {
    std::lock_guard lock(impl_->serve_mu);
    impl_->stopped = true;
  }
  impl_->serve_cv.notify_all();
}

}  // namespace uppzy::dashboard
