// uppzy-worker jobs [--state S] [--error-kind K] [--since 1h] [--limit N] [--json]: a listing, newest
// first. Never the message or answer text (see `show --show-text`).
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/table.h"
#include "cli/validators.h"
#include "dashboard/json_views.h"
#include "uppzy/duration.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

struct Options {
  std::string state;
  std::string error_kind;
  std::string since;
  int limit = 50;
  bool json = false;
};

int Run(const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  JobFilter f;
  f.state = o.state;
  f.error_kind = o.error_kind;
  if (!o.since.empty()) f.since = ParseDuration(o.since);
  f.limit = o.limit;
  try {
    OpsStore ops(url);
    const auto jobs = ops.JobsList(f);
    if (o.json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& x : jobs) j.push_back(dashboard::JobSummaryJson(x));
      io.out << j.dump(2) << "\n";
      return kExitOk;
    }
    if (jobs.empty()) {
      io.out << "no jobs match\n";
      return kExitOk;
    }
    Table t({"id", "job_key", "state", "attempts", "error_kind", "http", "request_id", "created_at",
             "finished_at"});
    for (const auto& x : jobs) {
      t.Row({std::to_string(x.id), x.job_key, x.state,
             std::to_string(x.attempts) + "/" + std::to_string(x.max_attempts), x.error_kind,
             x.last_http_status ? std::to_string(x.last_http_status) : "", x.request_id, x.created_at,
             x.finished_at});
    }
    t.Print(io.out, 32);
    if (static_cast<int>(jobs.size()) == o.limit) io.out << "(first " << o.limit << "; --limit N for more)\n";
    return kExitOk;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker jobs: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddJobs(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("jobs", "List jobs, newest first (no message or answer text)");
  c.app->add_option("--state", o->state, "Only jobs in this state")->check(JobStateValidator());
  c.app->add_option("--error-kind", o->error_kind, "Only jobs whose latest error_kind is this")
      ->check(ErrorKindValidator());
  c.app
      ->add_option("--since", o->since,
                   "Only jobs finished (or, if unfinished, created) within this long: 90s, 30m, 1h, 7d")
      ->check(DurationValidator());
  c.app->add_option("--limit", o->limit, "At most this many rows (default 50)")->check(CLI::Range(1, 10000));
  c.app->add_flag("--json", o->json, "Print as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
