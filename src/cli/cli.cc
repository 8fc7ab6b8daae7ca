#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <csignal>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "uppzy/log.h"
#include "uppzy/store.h"
#include "uppzy/worker.h"

namespace uppzy::cli {
namespace {

// Environment with command-line overrides on top (flags win over variables).
EnvLookup WithOverrides(const EnvLookup& env, std::map<std::string, std::string> overrides) {
  return [env, overrides = std::move(overrides)](std::string_view name) -> std::optional<std::string> {
    auto it = overrides.find(std::string(name));
    if (it != overrides.end() && !it->second.empty()) return it->second;
    return env(name);
  };
}

int ConfigProblems(const std::vector<std::string>& problems, std::ostream& err) {
  err << "uppzy-worker: configuration error (" << problems.size() << " problem"
      << (problems.size() == 1 ? "" : "s") << "):\n";
  for (const auto& p : problems) err << "  - " << p << "\n";
  return kExitUsage;
}

int Migrate(const EnvLookup& env, std::ostream& out, std::ostream& err) {
  auto cfg = LoadDatabaseConfig(env);
  if (!cfg.problems.empty()) return ConfigProblems(cfg.problems, err);
  try {
    Store store(cfg.config.database_url);
    auto applied = store.Migrate();
    if (applied.empty()) {
      out << "schema is up to date\n";
    } else {
      for (const auto& name : applied) out << "applied " << name << "\n";
    }
    return kExitOk;
  } catch (const StoreError& e) {
    err << "uppzy-worker migrate: " << e.what() << "\n";
    return kExitFailed;
  }
}

struct EnqueueOptions {
  NewJob job;
  int max_attempts = 0;
};

int Enqueue(const EnvLookup& env, const EnqueueOptions& o, std::ostream& out, std::ostream& err) {
  auto cfg = LoadDatabaseConfig(env);
  if (!cfg.problems.empty()) return ConfigProblems(cfg.problems, err);
  NewJob job = o.job;
  if (o.max_attempts > 0) job.max_attempts = o.max_attempts;
  try {
    Store store(cfg.config.database_url);
    EnqueueResult r = store.JobsEnqueue(job);
    out << r.id << "\n";
    if (!r.created) err << "a job with key '" << job.job_key << "' already exists; nothing enqueued\n";
    return kExitOk;
  } catch (const StoreError& e) {
    // Constraint names say which rule was broken, e.g. chat_jobs_message_length.
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what = what.substr(0, nl);
    err << "uppzy-worker enqueue: rejected, nothing enqueued: " << what << "\n";
    return kExitFailed;
  }
}

int Incidents(const EnvLookup& env, const std::string& action, const std::vector<long long>& ids, bool all,
              bool as_json, std::ostream& out, std::ostream& err) {
  auto cfg = LoadDatabaseConfig(env);
  if (!cfg.problems.empty()) return ConfigProblems(cfg.problems, err);
  try {
    Store store(cfg.config.database_url);
    if (action == "resolve") {
      if (all) {
        out << "resolved " << store.IncidentsResolveAll() << " incident(s)\n";
        return kExitOk;
      }
      if (ids.empty()) {
        err << "uppzy-worker incidents resolve: give incident ids or --all\n";
        return kExitUsage;
      }
      int rc = kExitOk;
      for (long long id : ids) {
        if (store.IncidentsResolve(id)) {
          out << "resolved incident " << id << "\n";
        } else {
          err << "no open incident with id " << id << "\n";
          rc = kExitFailed;
        }
      }
      return rc;
    }
    auto list = store.IncidentsList(action != "all");
    if (as_json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& i : list) {
        j.push_back({{"id", i.id},
                     {"kind", i.kind},
                     {"http_status", i.http_status},
                     {"detail", i.detail},
                     {"api_key_fingerprint", i.api_key_fingerprint},
                     {"opened_at", i.opened_at},
                     {"resolved_at",
                      i.resolved_at.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.resolved_at)}});
      }
      out << j.dump(2) << "\n";
      return kExitOk;
    }
    if (list.empty()) {
      out << "no open incidents\n";
      return kExitOk;
    }
    for (const auto& i : list) {
      out << "#" << i.id << "  " << i.kind << " (HTTP " << i.http_status << ")  key " << i.api_key_fingerprint
          << "  opened " << i.opened_at << (i.resolved_at.empty() ? "  OPEN" : "  resolved " + i.resolved_at)
          << "\n    " << i.detail << "\n";
    }
    return kExitOk;
  } catch (const StoreError& e) {
    err << "uppzy-worker incidents: " << e.what() << "\n";
    return kExitFailed;
  }
}

int Run(const EnvLookup& env, bool until_empty, std::ostream& err) {
  auto cfg = LoadConfig(env);
  if (!cfg.problems.empty()) return ConfigProblems(cfg.problems, err);
  InitLogging(cfg.config.log_level, cfg.config.log_format);

  // Signals are taken by one thread with sigwait: the first stops gracefully, a second exits at once.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
    Worker worker(cfg.config, WorkerOptions{until_empty});
    std::atomic<bool> finished{false};
    std::thread signals([&] {
      int signals_seen = 0;
      timespec tick{0, 200'000'000};
      while (!finished) {
        int sig = sigtimedwait(&set, nullptr, &tick);
        if (sig != SIGINT && sig != SIGTERM) continue;
        if (++signals_seen == 1) {
          LogEvent(spdlog::level::info, "stop_requested", {{"signal", std::to_string(sig)}});
          worker.Stop();
        } else {
          LogEvent(spdlog::level::warn, "second_signal_exiting_now", {});
          spdlog::default_logger()->flush();
          std::_Exit(kExitFailed);
        }
      }
    });
    int rc = worker.Run();
    finished = true;
    signals.join();
    spdlog::default_logger()->flush();
    return rc;
  } catch (const std::invalid_argument& e) {
    err << "uppzy-worker: configuration error:\n  - " << e.what() << "\n";
    return kExitUsage;
  }
}

}  // namespace

int RunCli(int argc, char** argv, const EnvLookup& env, std::ostream& out, std::ostream& err) {
  CLI::App app{"uppzy-worker: a PostgreSQL-backed job runner for Uppzy's async chat API"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  std::string database_url;
  app.add_option("--database-url", database_url, "PostgreSQL URL (overrides DATABASE_URL)");

  auto* migrate = app.add_subcommand("migrate", "Apply the migrations not yet applied (safe to run twice)");

  auto* run = app.add_subcommand("run", "Run the worker until SIGTERM/SIGINT");
  bool until_empty = false;
  std::map<std::string, std::string> run_flags;
  run->add_flag("--until-empty", until_empty, "Exit once no job is queued, retrying, submitting or polling");
  for (const auto& [flag, var] :
       std::vector<std::pair<std::string, std::string>>{{"--base-url", "UPPZY_BASE_URL"},
                                                        {"--site-id", "UPPZY_SITE_ID"},
                                                        {"--worker-id", "UPPZY_WORKER_ID"},
                                                        {"--max-in-flight", "UPPZY_MAX_IN_FLIGHT"},
                                                        {"--poll-interval-ms", "UPPZY_POLL_INTERVAL_MS"},
                                                        {"--poll-timeout-ms", "UPPZY_POLL_TIMEOUT_MS"},
                                                        {"--log-level", "UPPZY_LOG_LEVEL"},
                                                        {"--log-format", "UPPZY_LOG_FORMAT"}}) {
    run->add_option(flag, run_flags[var], "Overrides " + var);
  }

  auto* enqueue =
      app.add_subcommand("enqueue", "Enqueue one job with the same INSERT a web app runs; prints its id");
  EnqueueOptions eo;
  enqueue->add_option("--session", eo.job.session_id, "Uppzy session_id (conversation scope)")->required();
  enqueue->add_option("--message", eo.job.message, "The question to ask")->required();
  enqueue->add_option("--language", eo.job.response_language, "response_language, e.g. en or pt-BR");
  enqueue->add_option("--key", eo.job.job_key, "job_key: the app's own id, for idempotent enqueue");
  enqueue->add_option("--max-attempts", eo.max_attempts, "Bound on submissions (1 to 100; default 3)");
  enqueue->add_option("--priority", eo.job.priority, "Higher runs first (default 0)");
  enqueue->add_option("--metadata", eo.job.metadata_json, "The app's own JSON object, returned as it came");

  auto* incidents = app.add_subcommand("incidents", "List or resolve 401/403 configuration incidents");
  std::string action = "list";
  std::vector<long long> ids;
  bool all = false, as_json = false;
  incidents->add_option("action", action, "list (open ones), all, or resolve")
      ->check(CLI::IsMember({"list", "all", "resolve"}));
  incidents->add_option("ids", ids, "Incident ids to resolve");
  incidents->add_flag("--all", all, "With resolve: resolve every open incident");
  incidents->add_flag("--json", as_json, "Print the listing as JSON");

  auto* version = app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::ParseError& e) {
    app.exit(e, out, err);
    return kExitUsage;
  }

  std::map<std::string, std::string> overrides = run_flags;
  overrides["DATABASE_URL"] = database_url;
  EnvLookup effective = WithOverrides(env, overrides);

  if (*version) {
    out << "uppzy-worker " << UPPZY_VERSION << "\n";
    return kExitOk;
  }
  if (*migrate) return Migrate(effective, out, err);
  if (*enqueue) return Enqueue(effective, eo, out, err);
  if (*incidents) return Incidents(effective, action, ids, all, as_json, out, err);
  if (*run) return Run(effective, until_empty, err);
  return kExitUsage;
}

}  // namespace uppzy::cli
