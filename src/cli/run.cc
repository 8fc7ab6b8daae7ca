// uppzy-worker run [--until-empty]: the worker, until SIGTERM/SIGINT. SIGHUP re-reads the key files.
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "uppzy/log.h"
#include "uppzy/worker.h"

namespace uppzy::cli {
namespace {

int Run(const Io& io, bool until_empty) {
  auto cfg = LoadConfig(io.env);
  if (!cfg.problems.empty()) return ConfigProblems(cfg.problems, io.err);
  InitLogging(cfg.config.log_level, cfg.config.log_format);
  SetLogRedaction(cfg.config.site.api_key);

  // Signals are taken by one thread with sigwait: the first stop signal stops gracefully, a second exits
  // at once; SIGHUP asks the worker to re-read its key files.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
    Worker worker(cfg.config, WorkerOptions{until_empty});
    std::atomic<bool> finished{false};
    std::thread signals([&] {
      int seen = 0;
      timespec tick{0, 200'000'000};
      while (!finished) {
        int sig = sigtimedwait(&set, nullptr, &tick);
        if (sig == SIGHUP) {
          LogEvent(spdlog::level::info, "key_reload_requested", {{"signal", std::to_string(sig)}});
          worker.ReloadKeys();
          continue;
        }
        if (sig != SIGINT && sig != SIGTERM) continue;
        if (++seen == 1) {
          LogEvent(spdlog::level::info, "stop_requested", {{"signal", std::to_string(sig)}});
          worker.Stop();
        } else {
          LogEvent(spdlog::level::warn, "second_signal_exiting_now", {});
          spdlog::default_logger()->flush();
          std::_Exit(kExitFailed);
        }
      }
    });
    int rc = kExitOk;
    try {
      rc = worker.Run();
    } catch (...) {
      finished = true;
      signals.join();
      throw;
    }
    finished = true;
    signals.join();
    spdlog::default_logger()->flush();
    return rc;
  } catch (const std::invalid_argument& e) {
    io.err << "uppzy-worker: configuration error:\n  - " << e.what() << "\n";
    return kExitUsage;
  }
}

}  // namespace

Command AddRun(CLI::App& app) {
  auto until_empty = std::make_shared<bool>(false);
  Command c;
  c.overrides = std::make_shared<std::map<std::string, std::string>>();
  c.app = app.add_subcommand("run", "Run the worker until SIGTERM/SIGINT");
  c.app->add_flag("--until-empty", *until_empty,
                  "Exit once no job is queued, retrying, submitting or polling");
  for (const char* var :
       {"UPPZY_BASE_URL", "UPPZY_SITE_ID", "UPPZY_WORKER_ID", "UPPZY_MAX_IN_FLIGHT", "UPPZY_POLL_INTERVAL_MS",
        "UPPZY_POLL_TIMEOUT_MS", "UPPZY_LOG_LEVEL", "UPPZY_LOG_FORMAT", "UPPZY_HTTP_ADDR"}) {
    // UPPZY_POLL_INTERVAL_MS -> --poll-interval-ms
    std::string flag = "--";
    for (const char* p = var + 6; *p; ++p) flag += *p == '_' ? '-' : static_cast<char>(std::tolower(*p));
    c.app->add_option(flag, (*c.overrides)[var], std::string("Overrides ") + var);
  }
  c.run = [until_empty](const Io& io) { return Run(io, *until_empty); };
  return c;
}

}  // namespace uppzy::cli
