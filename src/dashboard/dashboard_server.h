// The operators' web dashboard (`uppzy-worker dashboard`): pages, their JSON, and the actions, on
// http::Server (src/http/server.h, libmicrohttpd). The rooms of src/dashboard/: this file routes and
// gates; sessions.h signs in and checks CSRF; dashboard_api.h answers /api/*; json_views.h shapes the
// JSON; params.h reads the input; store_pool.h and overview_snapshots.h reach the database
// (DashboardStore); assets.h serves the files of assets/, compiled in at build time.
//
//   page        JSON                          actions (POST, JSON body)
//   /           /api/overview                 /api/incidents/{id}/resolve
//   /jobs       /api/jobs?state=&error_kind=&job_key=&session_id=&since=&until=&after=&limit=
//                                             /api/jobs/retry, /api/jobs/cancel  {"ids":[..]} or
//                                             {"filter":{..}}
//                                             or the form ids=1,2,3 (up to 10,000 ids; body <= 1 MiB)
//   /jobs/{id}  /api/jobs/{id}                /api/jobs/{id}/retry, /api/jobs/{id}/cancel
//   /healthz    200 {"status":"ok"} (no database access)
//
// Security:
//   - Without a token the dashboard is read-only: every page says so and every action answers 403.
//     It then listens on loopback only (DashboardSettingsProblems) and answers only requests whose Host
//     is a loopback name, so a web page elsewhere cannot read it through DNS rebinding.
//   - With a token, everything but /healthz, /login and the static assets needs a session: the login
//     form sets an HttpOnly, SameSite=Strict cookie (12 hours). Scripts may send
//     `Authorization: Bearer <token>` instead.
//   - A POST made with the session cookie needs the session's CSRF token in `X-CSRF-Token` (the page
//     reads it from <meta name="csrf-token">); a POST whose Origin is another site is refused. GET never
//     changes anything.
//   - Every response carries Content-Security-Policy (self only: no inline script or style),
//     X-Content-Type-Options: nosniff, X-Frame-Options: DENY and Referrer-Policy: same-origin (no-referrer
//     would make the browser send "Origin: null" with same-origin POSTs, which the Origin check refuses).
//   - Message and answer text appear only with show_text.
// Errors are JSON {"error": "..."} with a 4xx status for bad input (400), missing auth (401), refused
// actions (403), unknown ids (404), actions that do not apply (409) and a body over its limit (413: 1 MiB
// for the bulk actions, 16 KiB elsewhere); 503 when the database is away.
//
// Serving (server.h): one epoll thread holds every connection (at most 4,096; closed after 10 s
// without progress) and answers the gate, pages, assets and /healthz itself; /api/* and POST /login
// run on 8 threads that a client gets only once its request is complete, so idle or slowloris
// sockets cannot take the dashboard down. Start() and Stop() are called from one thread.
#pragma once

#include <memory>
#include <string>

namespace uppzy::dashboard {

struct DashboardOptions {
  std::string database_url;
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  std::string token;                      // "" = read-only
  bool show_text = false;                 // serve message and answer text
  int db_connections = 4;                 // at most this many connections to PostgreSQL
  // /api/overview is answered from a snapshot that a background thread recomputes at least this
  // often while someone watches (see OverviewSnapshots in the .cc); 0: every request computes it.
  int overview_cache_ms = 2000;
};

class DashboardServer {
 public:
  explicit DashboardServer(DashboardOptions options);
  ~DashboardServer();
  DashboardServer(const DashboardServer&) = delete;
  DashboardServer& operator=(const DashboardServer&) = delete;

  // Binds the listen address. Throws std::invalid_argument naming UPPZY_DASHBOARD_ADDR when it cannot.
  void Start();
  int port() const;
  // Serves requests until Stop() is called (from another thread).
  void Serve();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uppzy::dashboard
