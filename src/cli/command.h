// What every `uppzy-worker` subcommand shares. Each subcommand lives in its own file and exposes one
// Add<Name>(CLI::App&) that registers its options and returns the function that runs it once parsed.
// Not thread-safe (the command line is parsed once, on the main thread).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "uppzy/config.h"
#include "uppzy/error_text.h"

namespace uppzy::cli {

struct Io {
  const EnvLookup& env;  // the environment with --database-url and run's flags layered on top
  std::ostream& out;
  std::ostream& err;
};

using Runner = std::function<int(const Io&)>;

struct Command {
  CLI::App* app = nullptr;
  Runner run;
  // Flags that override environment variables (variable name -> flag value; empty = not given).
  std::shared_ptr<std::map<std::string, std::string>> overrides;
};

// Prints "configuration error (N problems)" with one line per problem; returns kExitUsage.
int ConfigProblems(const std::vector<std::string>& problems, std::ostream& err);

// The database URL for commands that need only the database; prints problems and returns "" if unset.
std::string DatabaseUrlOrComplain(const Io& io);

Command AddMigrate(CLI::App& app);
Command AddRun(CLI::App& app);
Command AddEnqueue(CLI::App& app);
Command AddIncidents(CLI::App& app);
Command AddFeedback(CLI::App& app);
Command AddCloseSession(CLI::App& app);
// Operator commands (stats.cc, jobs.cc, show.cc, retry.cc, cancel.cc, purge.cc).
Command AddStats(CLI::App& app);
Command AddJobs(CLI::App& app);
Command AddShow(CLI::App& app);
Command AddRetry(CLI::App& app);
Command AddCancel(CLI::App& app);
Command AddPurge(CLI::App& app);
// uppzy.sites and their queues (sites.cc).
Command AddSites(CLI::App& app);
// The operators' web dashboard (dashboard.cc).
Command AddDashboard(CLI::App& app);

}  // namespace uppzy::cli
