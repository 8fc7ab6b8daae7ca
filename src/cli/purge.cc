// uppzy-worker purge --state completed --older-than 7d [--batch-size N] [--json]: deletes finished
// jobs in batches through uppzy.purge_jobs (each batch its own short transaction) until none is left.
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/validators.h"
#include "uppzy/duration.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

struct Options {
  std::string state;
  std::string older_than;
  int batch_size = 1000;
  bool json = false;
};

int Run(const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  const auto older_than = ParseDuration(o.older_than, true).value_or(std::chrono::seconds(0));
  long long total = 0;
  try {
    OpsStore ops(url);
    while (true) {
      const int n = ops.JobsPurge(o.state, older_than, o.batch_size);
      total += n;
      if (n < o.batch_size) break;
    }
  } catch (const StoreError& e) {
    io.err << "uppzy-worker purge: " << FirstLine(e.what()) << " (" << total
           << " job(s) purged before that)\n";
    return kExitFailed;
  }
  if (o.json) {
    io.out << nlohmann::json{{"purged", total}, {"state", o.state}, {"older_than", o.older_than}}.dump(2)
           << "\n";
  } else {
    io.out << "purged " << total << " " << o.state << " job(s) finished more than " << o.older_than
           << " ago\n";
  }
  return kExitOk;
}

}  // namespace

Command AddPurge(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("purge", "Delete finished jobs older than a duration, in batches");
  c.app->add_option("--state", o->state, "completed, failed or cancelled")
      ->required()
      ->check(FinishedStateValidator());
  c.app->add_option("--older-than", o->older_than, "Finished more than this long ago: 90s, 30m, 1h, 7d")
      ->required()
      ->check(DurationValidator());
  c.app->add_option("--batch-size", o->batch_size, "Rows per transaction (default 1000)")
      ->check(CLI::Range(1, 100000));
  c.app->add_flag("--json", o->json, "Print the result as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
