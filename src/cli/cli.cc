#include "cli/cli.h"

#include <map>

#include "cli/command.h"

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

}  // namespace

int ConfigProblems(const std::vector<std::string>& problems, std::ostream& err) {
  err << "uppzy-worker: configuration error (" << problems.size() << " problem"
      << (problems.size() == 1 ? "" : "s") << "):\n";
  for (const auto& p : problems) err << "  - " << p << "\n";
  return kExitUsage;
}

std::string DatabaseUrlOrComplain(const Io& io) {
  auto cfg = LoadDatabaseConfig(io.env);
  if (!cfg.problems.empty()) {
    ConfigProblems(cfg.problems, io.err);
    return {};
  }
  return cfg.config.database_url;
}

int RunCli(int argc, char** argv, const EnvLookup& env, std::ostream& out, std::ostream& err) {
  CLI::App app{"uppzy-worker: a PostgreSQL-backed job runner for Uppzy's async chat API"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  std::string database_url;
  app.add_option("--database-url", database_url, "PostgreSQL URL (overrides DATABASE_URL)");

  // One line per subcommand; each lives in its own file.
  std::vector<Command> commands = {AddMigrate(app),   AddRun(app),      AddEnqueue(app),
                                   AddIncidents(app), AddFeedback(app), AddCloseSession(app)};
  for (auto add : {AddStats, AddJobs, AddShow, AddRetry, AddCancel, AddPurge, AddSites})
    commands.push_back(add(app));
  commands.push_back(AddDashboard(app));
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
  if (*version) {
    out << "uppzy-worker " << UPPZY_VERSION << "\n";
    return kExitOk;
  }

  std::map<std::string, std::string> overrides;
  overrides["DATABASE_URL"] = database_url;
  for (const auto& c : commands) {
    if (*c.app && c.overrides) {
      for (const auto& [var, value] : *c.overrides) overrides[var] = value;
    }
  }
  const EnvLookup effective = WithOverrides(env, overrides);
  const Io io{effective, out, err};
  for (const auto& c : commands) {
    if (*c.app) return c.run(io);
  }
  return kExitUsage;
}

}  // namespace uppzy::cli
