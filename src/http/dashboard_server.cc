#include "http/dashboard_server.h"

#include <httplib.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include "http/dashboard_assets.h"
#include "http/dashboard_params.h"
#include "uppzy/config.h"
#include "uppzy/dashboard_store.h"
#include "uppzy/job.h"
#include "uppzy/log.h"

namespace uppzy::http {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kCookieName = "uppzy_dashboard_session";
constexpr auto kSessionLifetime = std::chrono::hours(12);
constexpr size_t kMaxSessions = 1000;
constexpr size_t kMaxIds = 10000;
// "All that match" acts on at most this many jobs per request (the newest first); the answer says
// when the cap was reached so the operator can repeat it.
constexpr int kMatchingCap = 100000;
constexpr const char* kReadOnlyError =
    "read-only: this dashboard was started without UPPZY_DASHBOARD_TOKEN, so it cannot retry, cancel or "
    "resolve";

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

json Opt(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }
json Opt(const std::optional<double>& d) { return d ? json(*d) : json(nullptr); }

json ParsedOr(const std::string& text, json fallback) {
  if (text.empty()) return fallback;
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json(text) : j;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body) + "\n", "application/json; charset=utf-8");
}

void SendError(httplib::Response& res, int status, const std::string& message) {
  SendJson(res, status, json{{"error", message}});
}

void SendStoreError(httplib::Response& res, const StoreError& e) {
  const std::string& state = e.sqlstate();
  if (e.transient()) {
    SendError(res, 503, "database unavailable: " + FirstLine(e.what()));
  } else if (state.rfind("22", 0) == 0) {
    SendError(res, 400, "bad value: " + FirstLine(e.what()));
  } else if (state == "42501") {
    SendError(res, 403, "the dashboard's database role may not do this: " + FirstLine(e.what()));
  } else {
    LogEvent(spdlog::level::err, "dashboard_store_error", {{"sqlstate", state}});
    SendError(res, 500, "database error: " + FirstLine(e.what()));
  }
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buf) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

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

std::string CookieValue(const httplib::Request& req, std::string_view name) {
  const size_t n = req.get_header_value_count("Cookie");
  for (size_t i = 0; i < n; ++i) {
    const std::string header = req.get_header_value("Cookie", i);
    size_t pos = 0;
    while (pos < header.size()) {
      size_t end = header.find(';', pos);
      if (end == std::string::npos) end = header.size();
      std::string_view part(header.data() + pos, end - pos);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=') {
        return std::string(part.substr(name.size() + 1));
      }
      pos = end + 1;
    }
  }
  return {};
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// ---- JSON of the store's values -------------------------------------------------------------------

json JobSummaryJson(const DashboardJobRow& j) {
  return {{"id", j.id},
          {"job_key", Opt(j.job_key)},
          {"session_id", j.session_id},
          {"state", j.state},
          {"attempts", j.attempts},
          {"max_attempts", j.max_attempts},
          {"error_kind", Opt(j.error_kind)},
          {"last_http_status", j.last_http_status ? json(j.last_http_status) : json(nullptr)},
          {"last_error", Opt(j.last_error)},
          {"request_id", Opt(j.request_id)},
          {"created_at", Opt(j.created_at)},
          {"finished_at", Opt(j.finished_at)},
          {"cancel_requested_at", Opt(j.cancel_requested_at)}};
}

bool Finished(const std::string& state) {
  auto s = ParseJobState(state);
  return s && IsTerminal(*s);
}

json JobDetailJson(const DashboardJobDetail& j) {
  json notification = nullptr;
  if (!j.notification_payload.empty()) {
    notification = {{"channel", "uppzy_chat_jobs"},
                    {"payload", ParsedOr(j.notification_payload, json(nullptr))},
                    {"text", j.notification_payload}};
  }
  return {{"id", j.id},
          {"job_key", Opt(j.job_key)},
          {"session_id", j.session_id},
          {"response_language", j.response_language},
          {"state", j.state},
          {"priority", j.priority},
          {"attempts", j.attempts},
          {"max_attempts", j.max_attempts},
          {"request_id", Opt(j.request_id)},
          {"polls", j.polls},
          {"error_kind", Opt(j.error_kind)},
          {"last_error", Opt(j.last_error)},
          {"last_http_status", j.last_http_status ? json(j.last_http_status) : json(nullptr)},
          {"errors", ParsedOr(j.errors_json, json::array())},
          {"metadata", ParsedOr(j.metadata_json, json::object())},
          {"result", ParsedOr(j.result_json, json(nullptr))},
          {"run_at", Opt(j.run_at)},
          {"created_at", Opt(j.created_at)},
          {"updated_at", Opt(j.updated_at)},
          {"submitted_at", Opt(j.submitted_at)},
          {"poll_deadline", Opt(j.poll_deadline)},
          {"finished_at", Opt(j.finished_at)},
          {"cancel_requested_at", Opt(j.cancel_requested_at)},
          {"locked_by", Opt(j.locked_by)},
          {"lease_expires_at", Opt(j.lease_expires_at)},
          {"notification", notification},
          {"actions",
           {{"retry", Finished(j.state)}, {"cancel", !Finished(j.state) && j.cancel_requested_at.empty()}}}};
}

json OverviewJson(const DashboardOverview& o) {
  json states = json::array();
  for (const auto& s : o.states) {
    states.push_back(
        {{"state", s.state}, {"jobs", s.jobs}, {"oldest_age_seconds", Opt(s.oldest_age_seconds)}});
  }
  json health = json::array();
  for (const auto& h : o.health) {
    health.push_back({{"period", h.period},
                      {"finished", h.finished},
                      {"completed", h.completed},
                      {"failed", h.failed},
                      {"cancelled", h.cancelled},
                      {"poll_timeouts", h.poll_timeouts},
                      {"timeout_rate", Opt(h.timeout_rate)},
                      {"retried", h.retried},
                      {"retry_rate", Opt(h.retry_rate)},
                      {"p50_seconds", Opt(h.p50_seconds)},
                      {"p95_seconds", Opt(h.p95_seconds)},
                      {"failures_by_kind", ParsedOr(h.failures_by_kind_json, json::object())}});
  }
  json rows = json::array();
  for (const auto& m : o.minutes)
    rows.push_back({m.minute, m.completed, m.failed, m.cancelled, m.poll_timeouts});
  json incidents = json::array();
  for (const auto& i : o.open_incidents) {
    incidents.push_back({{"id", i.id},
                         {"kind", i.kind},
                         {"http_status", i.http_status ? json(i.http_status) : json(nullptr)},
                         {"detail", Opt(i.detail)},
                         {"site_id", Opt(i.site_id)},
                         {"api_key_fingerprint", i.api_key_fingerprint},
                         {"opened_by", Opt(i.opened_by)},
                         {"opened_at", i.opened_at}});
  }
  json workers = json::array();
  for (const auto& w : o.workers) {
    workers.push_back({{"id", w.id},
                       {"host", w.host},
                       {"pid", w.pid},
                       {"version", w.version},
                       {"site_id", Opt(w.site_id)},
                       {"started_at", w.started_at},
                       {"heartbeat_at", w.heartbeat_at},
                       {"heartbeat_age_seconds", w.heartbeat_age_seconds},
                       {"lease_ms", w.lease_ms},
                       {"jobs_in_flight", w.jobs_in_flight},
                       {"breaker_state", w.breaker_state},
                       {"stopped_at", Opt(w.stopped_at)},
                       {"status", w.status}});
  }
  json feedback = json::array();
  for (const auto& f : o.feedback) {
    feedback.push_back({{"period", f.period},
                        {"delivered", f.delivered},
                        {"failed", f.failed},
                        {"good", f.good},
                        {"bad", f.bad},
                        {"good_ratio", Opt(f.good_ratio)},
                        {"pending", f.pending}});
  }
  return {{"now", o.now},
          {"states", states},
          {"health", health},
          {"finished_per_minute",
           {{"start", o.minutes_start},
            {"minutes", 1440},
            {"columns", {"minute", "completed", "failed", "cancelled", "poll_timeouts"}},
            {"rows", rows}}},
          {"incidents", incidents},
          {"workers", workers},
          {"feedback", feedback}};
}

json FilterJson(const DashboardJobFilter& f) {
  json j = json::object();
  if (!f.state.empty()) j["state"] = f.state;
  if (!f.error_kind.empty()) j["error_kind"] = f.error_kind;
  if (!f.job_key.empty()) j["job_key"] = f.job_key;
  if (!f.session_id.empty()) j["session_id"] = f.session_id;
  return j;
}

// ---- A small pool of store connections ------------------------------------------------------------

class StorePool {
 public:
  StorePool(std::string url, int max) : url_(std::move(url)), max_(max < 1 ? 1 : max) {}

  // Runs fn(store) on a pooled connection. A connection that failed with a transient error is dropped
  // (the next call opens a new one); reads (`retry_transient`) are tried once more on a fresh one.
  template <typename Fn>
  auto With(Fn&& fn, bool retry_transient = true) -> decltype(fn(std::declval<DashboardStore&>())) {
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<DashboardStore> store = Take();
      try {
        if (!store) store = std::make_unique<DashboardStore>(url_);
        auto result = fn(*store);
        Give(std::move(store));
        return result;
      } catch (const StoreError& e) {
        if (e.transient()) {
          Give(nullptr);
          if (retry_transient && attempt == 0) continue;
        } else {
          Give(std::move(store));
        }
        throw;
      } catch (...) {
        Give(nullptr);
        throw;
      }
    }
  }

 private:
  std::unique_ptr<DashboardStore> Take() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_use_ < max_; });
    ++in_use_;
    if (idle_.empty()) return nullptr;
    auto s = std::move(idle_.back());
    idle_.pop_back();
    return s;
  }

  void Give(std::unique_ptr<DashboardStore> s) {
    {
      std::lock_guard lock(mu_);
      --in_use_;
      if (s) idle_.push_back(std::move(s));
    }
    cv_.notify_one();
  }

  const std::string url_;
  const int max_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_use_ = 0;
  std::vector<std::unique_ptr<DashboardStore>> idle_;
};

// The overview aggregates a day of finished jobs: with a million finished rows that is 0.6 s of
// database work when they span a week, 3 s when all of them finished within the day
// (docs/benchmarks.md), far more than a page may wait. So one background thread
// computes it and every request is answered from the latest snapshot (its "now" says when it was
// taken):
//   - while someone is watching (a request within the last minute) it is recomputed every
//     `min_interval`, or every 5 times its own computation time if that is longer, so it never keeps
//     the database busy more than a fifth of the time;
//   - nobody watching: once a minute, so the first page after a pause shows figures at most a minute
//     old at once and fresh ones at its next refresh;
//   - after an action (Invalidate) the thread recomputes at once; meanwhile each request gets the last
//     snapshot with the parts an action changes and that stay cheap at any size (unfinished states,
//     incidents, workers, feedback) read afresh (`patch`), marked "partial": true;
//   - with no snapshot yet, or when the last one is older than 90 s (the database was away), the
//     request computes a fresh one itself.
// min_interval 0: no thread; every request computes (scripts/bench-dashboard measures that).
class OverviewSnapshots {
 public:
  using Compute = std::function<std::string()>;                  // throws StoreError
  using Patch = std::function<std::string(const std::string&)>;  // throws StoreError

  OverviewSnapshots(Compute compute, Patch patch, std::chrono::milliseconds min_interval)
      : compute_(std::move(compute)), patch_(std::move(patch)), min_interval_(min_interval) {}
  ~OverviewSnapshots() { Stop(); }

  void Start() {
    if (min_interval_.count() > 0) thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::string Get() {
    if (min_interval_.count() == 0) return compute_();
    std::unique_lock lock(mu_);
    const auto now = SteadyClock::now();
    last_request_ = now;
    if (body_ && now - at_ < kMaxServedAge) {
      std::shared_ptr<const std::string> body = body_;
      if (gen_ != generation_) {
        cv_.notify_all();
        lock.unlock();
        return patch_(*body);
      }
      if (now - at_ >= Interval(now)) cv_.notify_all();
      return *body;
    }
    lock.unlock();
    return Refresh();
  }

  // Data changed (an action): the next answer is computed afresh.
  void Invalidate() {
    {
      std::lock_guard lock(mu_);
      ++generation_;
    }
    cv_.notify_all();
  }

 private:
  static constexpr auto kWatched = std::chrono::seconds(60);
  static constexpr auto kIdleInterval = std::chrono::seconds(60);
  static constexpr auto kMaxServedAge = std::chrono::seconds(90);

  // Requires mu_.
  SteadyClock::duration Interval(SteadyClock::time_point now) const {
    if (now - last_request_ >= kWatched) return kIdleInterval;
    return std::max<SteadyClock::duration>(min_interval_, 5 * last_compute_);
  }

  std::string Refresh() {
    std::lock_guard compute(compute_mu_);  // one computation at a time
    uint64_t gen = 0;
    {
      std::lock_guard lock(mu_);
      // Computed by someone else while we waited for compute_mu_.
      if (body_ && gen_ == generation_ && SteadyClock::now() - at_ < std::chrono::milliseconds(200))
        return *body_;
      gen = generation_;
    }
    const auto start = SteadyClock::now();
    auto body = std::make_shared<const std::string>(compute_());
    std::lock_guard lock(mu_);
    body_ = body;
    at_ = start;
    gen_ = gen;
    last_compute_ = SteadyClock::now() - start;
    return *body;
  }

  void Loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      const auto due = [&] {
        return !body_ || gen_ != generation_ || SteadyClock::now() - at_ >= Interval(SteadyClock::now());
      };
      if (!due()) {
        cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_ || due(); });
        continue;
      }
      lock.unlock();
      bool failed = false;
      try {
        Refresh();
      } catch (const std::exception& e) {
        LogEvent(spdlog::level::warn, "dashboard_overview_failed", {{"error", FirstLine(e.what())}});
        failed = true;
      }
      lock.lock();
      if (failed) cv_.wait_for(lock, std::chrono::seconds(5), [&] { return stopping_; });
    }
  }

  const Compute compute_;
  const Patch patch_;
  const std::chrono::milliseconds min_interval_;
  std::thread thread_;
  std::mutex compute_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::shared_ptr<const std::string> body_;
  SteadyClock::time_point at_;
  uint64_t gen_ = 0;
  uint64_t generation_ = 1;
  SteadyClock::time_point last_request_;
  SteadyClock::duration last_compute_{};
};

struct Session {
  std::string csrf;
  SteadyClock::time_point expires;
};

// Who is asking: nobody (read-only mode or not signed in), a browser session, or a script with the token.
struct Caller {
  bool authenticated = false;
  bool bearer = false;
  std::string session_id;
  std::string csrf;
};

}  // namespace

struct DashboardServer::Impl {
  explicit Impl(DashboardOptions o)
      : options(std::move(o)),
        pool(options.database_url, options.db_connections),
        overview([this] { return ComputeOverview(); },
                 [this](const std::string& full) { return PatchOverview(full); },
                 std::chrono::milliseconds(options.overview_cache_ms)) {}

  DashboardOptions options;
  StorePool pool;
  httplib::Server server;
  int port = 0;

  std::mutex sessions_mu;
  std::unordered_map<std::string, Session> sessions;

  OverviewSnapshots overview;

  bool read_only() const { return options.token.empty(); }

  Caller CallerOf(const httplib::Request& req) {
    Caller c;
    if (read_only()) return c;
    const std::string auth = req.get_header_value("Authorization");
    if (StartsWith(auth, "Bearer ") && ConstantTimeEquals(auth.substr(7), options.token)) {
      c.authenticated = c.bearer = true;
      return c;
    }
    const std::string sid = CookieValue(req, kCookieName);
    if (sid.empty()) return c;
    std::lock_guard lock(sessions_mu);
    auto it = sessions.find(sid);
    if (it == sessions.end()) return c;
    if (it->second.expires < SteadyClock::now()) {
      sessions.erase(it);
      return c;
    }
    c.authenticated = true;
    c.session_id = sid;
    c.csrf = it->second.csrf;
    return c;
  }

  std::string NewSession() {
    const std::string sid = RandomHex(32);
    std::lock_guard lock(sessions_mu);
    const auto now = SteadyClock::now();
    for (auto it = sessions.begin(); it != sessions.end();) {
      it = it->second.expires < now ? sessions.erase(it) : std::next(it);
    }
    if (sessions.size() >= kMaxSessions) {
      auto oldest = sessions.begin();
      for (auto it = sessions.begin(); it != sessions.end(); ++it) {
        if (it->second.expires < oldest->second.expires) oldest = it;
      }
      sessions.erase(oldest);
    }
    sessions[sid] = Session{RandomHex(32), now + kSessionLifetime};
    return sid;
  }

  // ---- Gatekeeping, before any route ------------------------------------------------------------

  httplib::Server::HandlerResponse Gate(const httplib::Request& req, httplib::Response& res) {
    using HR = httplib::Server::HandlerResponse;
    const std::string& path = req.path;
    const bool api = StartsWith(path, "/api/");
    if (read_only()) {
      // Loopback only: refuse other Host names (DNS rebinding).
      const std::string host = HostName(req.get_header_value("Host"));
      if (!host.empty() && !IsLoopbackHost(host)) {
        SendError(res, 403, "this dashboard answers only requests for 127.0.0.1 or localhost");
        return HR::Handled;
      }
    }
    if (req.method == "POST") {
      const std::string origin = req.get_header_value("Origin");
      if (!origin.empty()) {
        const auto scheme_end = origin.find("://");
        const std::string origin_host = scheme_end == std::string::npos ? "" : origin.substr(scheme_end + 3);
        if (origin_host != req.get_header_value("Host")) {
          SendError(res, 403, "cross-origin request refused");
          return HR::Handled;
        }
      }
    }
    const bool open =
        path == "/healthz" || path == "/login" || path == "/favicon.ico" || StartsWith(path, "/static/");
    const Caller caller = CallerOf(req);
    if (!read_only() && !open && !caller.authenticated) {
      if (api || req.method != "GET") {
        SendError(res, 401, "sign in first (the login form at /login, or Authorization: Bearer <token>)");
      } else {
        res.status = 303;
        res.set_header("Location", "/login");
      }
      return HR::Handled;
    }
    if (req.method == "POST" && path != "/login") {
      if (read_only()) {
        SendError(res, 403, kReadOnlyError);
        return HR::Handled;
      }
      if (!caller.bearer) {
        const std::string sent = req.get_header_value("X-CSRF-Token");
        if (sent.empty() || !ConstantTimeEquals(sent, caller.csrf)) {
          SendError(res, 403, "missing or wrong X-CSRF-Token header (reload the page)");
          return HR::Handled;
        }
      }
    }
    return HR::Unhandled;
  }

  // ---- Pages ------------------------------------------------------------------------------------

  void SendPage(const httplib::Request& req, httplib::Response& res, assets::Page page,
                const std::string& title, const std::string& page_name, std::string_view extra = {}) {
    const Caller caller = CallerOf(req);
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
    res.set_content(html, "text/html; charset=utf-8");
  }

  // ---- Routes -----------------------------------------------------------------------------------

  void Routes() {
    auto& s = server;
    s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\":\"ok\"}\n", "application/json");
    });
    s.Get("/static/(app\\.js|app\\.css|icon\\.svg)", [](const httplib::Request& req, httplib::Response& res) {
      const assets::Asset* a = assets::Find(req.path);
      res.set_content(std::string(a->body), std::string(a->content_type));
    });
    s.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) {
      const assets::Asset* a = assets::Find("/static/icon.svg");
      res.set_content(std::string(a->body), std::string(a->content_type));
    });

    s.Get("/", [this](const httplib::Request& req, httplib::Response& res) {
      SendPage(req, res, assets::Page::kOverview, "Overview", "overview");
    });
    s.Get("/jobs", [this](const httplib::Request& req, httplib::Response& res) {
      SendPage(req, res, assets::Page::kJobs, "Jobs", "jobs");
    });
    s.Get("/jobs/([^/]+)", [this](const httplib::Request& req, httplib::Response& res) {
      auto id = ParseId(req.matches[1].str());
      if (!id) {
        res.status = 404;
        res.set_content("not found\n", "text/plain; charset=utf-8");
        return;
      }
      SendPage(req, res, assets::Page::kJob, "Job " + std::to_string(*id), "job");
    });

    s.Get("/login", [this](const httplib::Request& req, httplib::Response& res) {
      if (read_only() || CallerOf(req).authenticated) {
        res.status = 303;
        res.set_header("Location", "/");
        return;
      }
      SendPage(req, res, assets::Page::kLogin, "Sign in", "login");
    });
    s.Post("/login", [this](const httplib::Request& req, httplib::Response& res) {
      if (read_only()) {
        SendError(res, 403, kReadOnlyError);
        return;
      }
      const std::string token = req.has_param("token") ? req.get_param_value("token") : "";
      if (token.empty() || !ConstantTimeEquals(token, options.token)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // slows guessing
        LogEvent(spdlog::level::warn, "dashboard_login_refused", {{"remote_addr", req.remote_addr}});
        res.status = 401;
        SendPage(req, res, assets::Page::kLogin, "Sign in", "login",
                 "<p class=\"error\" id=\"login-error\" role=\"alert\">That token is not right.</p>");
        return;
      }
      const std::string sid = NewSession();
      LogEvent(spdlog::level::info, "dashboard_login", {{"remote_addr", req.remote_addr}});
      res.status = 303;
      res.set_header("Set-Cookie", std::string(kCookieName) + "=" + sid +
                                       "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
                                       std::to_string(std::chrono::seconds(kSessionLifetime).count()));
      res.set_header("Location", "/");
    });
    s.Post("/logout", [this](const httplib::Request& req, httplib::Response& res) {
      const Caller caller = CallerOf(req);
      if (!caller.session_id.empty()) {
        std::lock_guard lock(sessions_mu);
        sessions.erase(caller.session_id);
      }
      res.set_header("Set-Cookie",
                     std::string(kCookieName) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
      SendJson(res, 200, json{{"signed_out", true}});
    });

    s.Get("/api/overview", [this](const httplib::Request&, httplib::Response& res) { Overview(res); });
    s.Get("/api/jobs", [this](const httplib::Request& req, httplib::Response& res) { JobsList(req, res); });
    s.Get("/api/jobs/([^/]+)",
          [this](const httplib::Request& req, httplib::Response& res) { JobGet(req, res); });
    s.Post("/api/jobs/(retry|cancel)", [this](const httplib::Request& req, httplib::Response& res) {
      JobsAct(req, res, req.matches[1].str() == "retry");
    });
    s.Post("/api/jobs/([^/]+)/(retry|cancel)", [this](const httplib::Request& req, httplib::Response& res) {
      JobAct(req, res, req.matches[2].str() == "retry");
    });
    s.Post("/api/incidents/([^/]+)/resolve",
           [this](const httplib::Request& req, httplib::Response& res) { IncidentResolve(req, res); });
  }

  // ---- JSON API ---------------------------------------------------------------------------------

  std::string ComputeOverview() {
    const auto start = SteadyClock::now();
    json j = OverviewJson(pool.With([](DashboardStore& s) { return s.OverviewRead(); }));
    j["read_only"] = read_only();
    j["show_text"] = options.show_text;
    j["partial"] = false;
    j["computed_in_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
    return Dump(j) + "\n";
  }

  // The last full overview with what an action may have changed read afresh (see OverviewSnapshots).
  std::string PatchOverview(const std::string& full) {
    json j = json::parse(full);
    const json live = OverviewJson(pool.With([](DashboardStore& s) { return s.OverviewRead(false); }));
    for (auto& state : j["states"]) {
      for (const auto& fresh : live["states"]) {
        if (state["state"] == fresh["state"]) state = fresh;
      }
    }
    for (const char* key : {"now", "incidents", "workers", "feedback"}) j[key] = live[key];
    j["partial"] = true;
    return Dump(j) + "\n";
  }

  void Overview(httplib::Response& res) {
    try {
      res.set_content(overview.Get(), "application/json; charset=utf-8");
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }

  void JobsList(const httplib::Request& req, httplib::Response& res) {
    static const std::set<std::string> kKnown = {"state", "error_kind", "job_key", "session_id",
                                                 "since", "until",      "after",   "limit"};
    for (const auto& [name, value] : req.params) {
      if (!kKnown.count(name)) {
        SendError(res, 400,
                  "unknown parameter '" + name.substr(0, 64) +
                      "'; use state, error_kind, job_key, session_id, since, until, after, limit");
        return;
      }
      if (req.params.count(name) > 1) {
        SendError(res, 400, name + ": given more than once");
        return;
      }
    }
    const ParsedJobQuery q = ParseJobQuery(
        [&](std::string_view name) -> std::optional<std::string> {
          const std::string key(name);
          if (!req.has_param(key.c_str())) return std::nullopt;
          return req.get_param_value(key.c_str());
        },
        NowMicros(), true);
    if (!q.error.empty()) {
      SendError(res, 400, q.error);
      return;
    }
    try {
      const DashboardJobPage page =
          pool.With([&](DashboardStore& s) { return s.JobsPage(q.filter, q.after, q.limit); });
      json jobs = json::array();
      for (const auto& j : page.jobs) jobs.push_back(JobSummaryJson(j));
      SendJson(res, 200,
               json{{"jobs", jobs},
                    {"next", page.next ? json(EncodeCursor(*page.next)) : json(nullptr)},
                    {"limit", q.limit},
                    {"filter", FilterJson(q.filter)}});
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }

  void JobGet(const httplib::Request& req, httplib::Response& res) {
    auto id = ParseId(req.matches[1].str());
    if (!id) {
      SendError(res, 400, "not a job id: use a positive whole number");
      return;
    }
    try {
      auto job = pool.With([&](DashboardStore& s) { return s.JobsGet(*id); });
      if (!job) {
        SendError(res, 404, "no job with id " + std::to_string(*id));
        return;
      }
      json j = JobDetailJson(*job);
      if (options.show_text) {
        try {
          auto text = pool.With([&](DashboardStore& s) { return s.JobsText(*id); });
          if (text) {
            j["message"] = text->first;
            j["answer"] = text->second ? json(*text->second) : json(nullptr);
          }
        } catch (const StoreError& e) {
          if (e.transient()) throw;
          j["message"] = nullptr;
          j["answer"] = nullptr;
          j["text_error"] = "cannot read the message and answer: " + FirstLine(e.what());
        }
      }
      SendJson(res, 200, j);
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }

  // POST /api/jobs/retry | /api/jobs/cancel with {"ids": [..]} or {"filter": {..}}.
  void JobsAct(const httplib::Request& req, httplib::Response& res, bool retry) {
    const json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      SendError(res, 400,
                "the body must be a JSON object: {\"ids\": [1, 2]} or {\"filter\": {\"state\": \"failed\"}}");
      return;
    }
    for (const auto& [key, value] : body.items()) {
      if (key != "ids" && key != "filter") {
        SendError(res, 400, "unknown field '" + key.substr(0, 64) + "'; give \"ids\" or \"filter\"");
        return;
      }
    }
    const bool has_ids = body.contains("ids");
    const bool has_filter = body.contains("filter");
    if (has_ids == has_filter) {
      SendError(res, 400, "give either \"ids\" (a list of job ids) or \"filter\" (all jobs that match it)");
      return;
    }
    const char* done_key = retry ? "requeued" : "cancelled";
    try {
      if (has_ids) {
        const json& ids_json = body["ids"];
        std::vector<int64_t> ids;
        bool ok = ids_json.is_array() && !ids_json.empty() && ids_json.size() <= kMaxIds;
        for (const auto& v : ids_json) {
          if (!ok) break;
          if (!v.is_number_integer() || v.get<int64_t>() <= 0) {
            ok = false;
            break;
          }
          ids.push_back(v.get<int64_t>());
        }
        if (!ok) {
          SendError(res, 400,
                    "ids: a list of 1 to " + std::to_string(kMaxIds) + " job ids (positive whole numbers)");
          return;
        }
        const int n =
            pool.With([&](DashboardStore& s) { return retry ? s.JobsRetry(ids) : s.JobsCancel(ids); }, false);
        overview.Invalidate();
        LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
                 {{"requested", std::to_string(ids.size())}, {done_key, std::to_string(n)}});
        SendJson(res, 200, json{{"requested", ids.size()}, {done_key, n}});
        return;
      }
      const json& f = body["filter"];
      if (!f.is_object()) {
        SendError(res, 400,
                  "filter: an object such as {\"state\": \"failed\", \"error_kind\": \"server_error\"}");
        return;
      }
      for (const auto& [key, value] : f.items()) {
        static const std::set<std::string> kKnown = {"state",      "error_kind", "job_key",
                                                     "session_id", "since",      "until"};
        if (!kKnown.count(key)) {
          SendError(res, 400,
                    "filter: unknown field '" + key.substr(0, 64) +
                        "'; use state, error_kind, job_key, session_id, since, until");
          return;
        }
        if (!value.is_string()) {
          SendError(res, 400, "filter." + key + ": a string");
          return;
        }
      }
      const ParsedJobQuery q = ParseJobQuery(
          [&](std::string_view name) -> std::optional<std::string> {
            const std::string key(name);
            if (!f.contains(key)) return std::nullopt;
            return f[key].get<std::string>();
          },
          NowMicros(), false);
      if (!q.error.empty()) {
        SendError(res, 400, "filter." + q.error);
        return;
      }
      if (q.filter.empty()) {
        SendError(res, 400,
                  "filter: give at least one of state, error_kind, job_key, session_id, since, until");
        return;
      }
      const int n = pool.With(
          [&](DashboardStore& s) {
            return retry ? s.JobsRetryMatching(q.filter, kMatchingCap)
                         : s.JobsCancelMatching(q.filter, kMatchingCap);
          },
          false);
      overview.Invalidate();
      LogEvent(spdlog::level::info, retry ? "dashboard_retry_matching" : "dashboard_cancel_matching",
               {{done_key, std::to_string(n)}});
      SendJson(res, 200,
               json{{done_key, n}, {"filter", FilterJson(q.filter)}, {"capped", n >= kMatchingCap}});
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }

  // POST /api/jobs/{id}/retry | cancel.
  void JobAct(const httplib::Request& req, httplib::Response& res, bool retry) {
    auto id = ParseId(req.matches[1].str());
    if (!id) {
      SendError(res, 400, "not a job id: use a positive whole number");
      return;
    }
    try {
      auto job = pool.With([&](DashboardStore& s) { return s.JobsGet(*id); });
      if (!job) {
        SendError(res, 404, "no job with id " + std::to_string(*id));
        return;
      }
      const bool finished = Finished(job->state);
      if (retry && !finished) {
        SendError(res, 409,
                  "job " + std::to_string(*id) + " is " + job->state +
                      "; only completed, failed or cancelled jobs can be retried");
        return;
      }
      if (!retry && finished) {
        SendError(
            res, 409,
            "job " + std::to_string(*id) + " is " + job->state + "; only unfinished jobs can be cancelled");
        return;
      }
      const int n = pool.With(
          [&](DashboardStore& s) { return retry ? s.JobsRetry({*id}) : s.JobsCancel({*id}); }, false);
      overview.Invalidate();
      if (n == 0) {
        SendError(res, 409, "job " + std::to_string(*id) + " changed meanwhile; reload it");
        return;
      }
      auto after = pool.With([&](DashboardStore& s) { return s.JobsGet(*id); });
      LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
               {{"job_id", std::to_string(*id)}});
      SendJson(res, 200,
               json{{"id", *id},
                    {retry ? "requeued" : "cancelled", n},
                    {"state", after ? json(after->state) : json(nullptr)}});
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }

  void IncidentResolve(const httplib::Request& req, httplib::Response& res) {
    auto id = ParseId(req.matches[1].str());
    if (!id) {
      SendError(res, 400, "not an incident id: use a positive whole number");
      return;
    }
    try {
      const auto r = pool.With([&](DashboardStore& s) { return s.IncidentsResolve(*id); }, false);
      overview.Invalidate();
      switch (r) {
        case DashboardStore::ResolveResult::kResolved:
          LogEvent(spdlog::level::info, "dashboard_incident_resolved",
                   {{"incident_id", std::to_string(*id)}});
          SendJson(res, 200, json{{"id", *id}, {"resolved", true}});
          return;
        case DashboardStore::ResolveResult::kAlreadyResolved:
          SendError(res, 409, "incident " + std::to_string(*id) + " is already resolved");
          return;
        case DashboardStore::ResolveResult::kNotFound:
          SendError(res, 404, "no incident with id " + std::to_string(*id));
          return;
      }
    } catch (const StoreError& e) {
      SendStoreError(res, e);
    }
  }
};

DashboardServer::DashboardServer(DashboardOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

DashboardServer::~DashboardServer() { Stop(); }

void DashboardServer::Start() {
  Impl& s = *impl_;
  const std::string& addr = s.options.listen;
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("UPPZY_DASHBOARD_ADDR: not host:port: " + addr);
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(addr.substr(colon + 1));

  s.server.set_tcp_nodelay(true);
  s.server.set_keep_alive_max_count(10000);
  s.server.set_payload_max_length(1 << 20);
  s.server.set_read_timeout(10, 0);
  // cpp-httplib holds a pool thread for each open keep-alive connection: a browser keeps up to
  // six, so 32 threads serve a handful of operators at once; idle connections are let go after 3 s.
  s.server.new_task_queue = [] { return new httplib::ThreadPool(32); };
  s.server.set_keep_alive_timeout(3);
  s.server.set_default_headers({
      {"Content-Security-Policy",
       "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "same-origin"},
      {"Cache-Control", "no-store"},
  });
  s.server.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return impl_->Gate(req, res); });
  s.server.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty() || res.status == 303) return httplib::Server::HandlerResponse::Unhandled;
        if (StartsWith(req.path, "/api/") || res.status != 404) {
          SendError(res, res.status,
                    res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                      : "request refused (HTTP " + std::to_string(res.status) + ")");
        } else {
          res.set_content("not found\n", "text/plain; charset=utf-8");
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.server.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        LogEvent(spdlog::level::err, "dashboard_internal_error",
                 {{"path", req.path}, {"error", FirstLine(what)}});
        SendError(res, 500, "internal error");
      });
  s.server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    LogEvent(spdlog::level::debug, "dashboard_request",
             {{"method", req.method}, {"path", req.path}, {"http_status", std::to_string(res.status)}});
  });
  s.Routes();

  s.port = port == 0 ? s.server.bind_to_any_port(host) : (s.server.bind_to_port(host, port) ? port : -1);
  if (s.port < 0) throw std::invalid_argument("UPPZY_DASHBOARD_ADDR: cannot listen on " + addr);
  s.overview.Start();
}

int DashboardServer::port() const { return impl_->port; }

void DashboardServer::Serve() { impl_->server.listen_after_bind(); }

void DashboardServer::Stop() {
  impl_->server.stop();
  impl_->overview.Stop();
}

}  // namespace uppzy::http
