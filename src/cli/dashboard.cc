// uppzy-worker dashboard [--listen HOST:PORT] [--show-text]: the operators' web dashboard (see
// src/dashboard/dashboard_server.h). Needs only DATABASE_URL; runs as a login with the uppzy_operator role.
//
//   UPPZY_DASHBOARD_ADDR   host:port, default 127.0.0.1:8080 (--listen overrides; port 0 picks a free
//                          one, printed in the dashboard_listening log line as http_port=)
//   UPPZY_DASHBOARD_TOKEN  enables actions behind a login (at least 16 characters); required to listen
//                          on anything but a loopback address. Without it the dashboard is read-only.
//   UPPZY_DASHBOARD_CACHE_MS  /api/overview is computed at most once per this long, whoever asks
//                          (default 2000, 0 .. 60000; 0 computes it for every request)
//   UPPZY_LOG_LEVEL, UPPZY_LOG_FORMAT  as for `run`
// Stops on SIGTERM/SIGINT. Exit codes: 0 stopped, 1 the database cannot be reached or the address
// cannot be bound, 2 a setting is wrong.
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "dashboard/dashboard_server.h"
#include "dashboard/params.h"
#include "uppzy/dashboard_store.h"
#include "uppzy/log.h"

namespace uppzy::cli {
namespace {

struct Options {
  bool show_text = false;
};

int Run(const Options& o, const Io& io) {
  std::vector<std::string> problems;
  auto db = LoadDatabaseConfig(io.env);
  problems = db.problems;
  const std::string addr = io.env("UPPZY_DASHBOARD_ADDR").value_or("127.0.0.1:8080");
  const std::string token = io.env("UPPZY_DASHBOARD_TOKEN").value_or("");
  for (auto& p : dashboard::DashboardSettingsProblems(addr, token)) problems.push_back(std::move(p));
  const std::string level = io.env("UPPZY_LOG_LEVEL").value_or("info");
  const std::string format = io.env("UPPZY_LOG_FORMAT").value_or("text");
  if (level != "trace" && level != "debug" && level != "info" && level != "warn" && level != "error") {
    problems.push_back("UPPZY_LOG_LEVEL: one of trace, debug, info, warn, error");
  }
  if (format != "text" && format != "json") problems.push_back("UPPZY_LOG_FORMAT: text or json");
  const std::string cache = io.env("UPPZY_DASHBOARD_CACHE_MS").value_or("2000");
  int cache_ms = -1;
  if (!cache.empty() && cache.size() <= 5 && cache.find_first_not_of("0123456789") == std::string::npos) {
    cache_ms = std::stoi(cache);
  }
  if (cache_ms < 0 || cache_ms > 60000)
    problems.push_back("UPPZY_DASHBOARD_CACHE_MS: a whole number from 0 to 60000");
  if (!problems.empty()) return ConfigProblems(problems, io.err);
  InitLogging(level, format);

  try {
    DashboardStore(db.config.database_url).Ping();
  } catch (const StoreError& e) {
    io.err << "uppzy-worker dashboard: cannot reach the database: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  dashboard::DashboardServer server(dashboard::DashboardOptions{.database_url = db.config.database_url,
                                                                .listen = addr,
                                                                .token = token,
                                                                .show_text = o.show_text,
                                                                .overview_cache_ms = cache_ms});
  try {
    server.Start();
  } catch (const std::invalid_argument& e) {
    io.err << "uppzy-worker dashboard: " << e.what() << "\n";
    return kExitFailed;
  }
  LogEvent(spdlog::level::info, "dashboard_listening",
           {{"addr", addr},
            {"http_port", std::to_string(server.port())},
            {"mode", token.empty() ? "read-only" : "actions"},
            {"show_text", o.show_text ? "true" : "false"}});
  spdlog::default_logger()->flush();

  std::atomic<bool> finished{false};
  std::thread signals([&] {
    timespec tick{0, 200'000'000};
    while (!finished) {
      const int sig = sigtimedwait(&set, nullptr, &tick);
      if (sig == SIGINT || sig == SIGTERM) {
        LogEvent(spdlog::level::info, "stop_requested", {{"signal", std::to_string(sig)}});
        server.Stop();
        return;
      }
    }
  });
  server.Serve();
  finished = true;
  signals.join();
  LogEvent(spdlog::level::info, "dashboard_stopped", {});
  spdlog::default_logger()->flush();
  return kExitOk;
}

}  // namespace

Command AddDashboard(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.overrides = std::make_shared<std::map<std::string, std::string>>();
  c.app = app.add_subcommand("dashboard",
                             "Serve the operators' web dashboard (read-only without UPPZY_DASHBOARD_TOKEN)");
  c.app->add_option("--listen", (*c.overrides)["UPPZY_DASHBOARD_ADDR"],
                    "host:port to listen on (overrides UPPZY_DASHBOARD_ADDR; default 127.0.0.1:8080)");
  c.app->add_flag("--show-text", o->show_text,
                  "Also show each job's message and answer text (needs a role that may read them)");
  c.app->footer(
      "Environment: DATABASE_URL (required), UPPZY_DASHBOARD_ADDR (default 127.0.0.1:8080), "
      "UPPZY_DASHBOARD_TOKEN (actions behind a login; required off loopback), UPPZY_DASHBOARD_CACHE_MS "
      "(default 2000), UPPZY_LOG_LEVEL, UPPZY_LOG_FORMAT.");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
