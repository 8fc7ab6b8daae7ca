// uppzy-worker retry ID... | --state failed [--error-kind K] [--since 1h] [--json]
// Requeues finished jobs through uppzy.retry_jobs / uppzy.retry_failed: state queued, attempts start
// over, the errors history is kept with an "operator_retry" entry. Prints how many were requeued.
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/validators.h"
#include "uppzy/duration.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

struct Options {
  std::vector<long long> ids;
  std::string state;
  std::string error_kind;
  std::string since;
  bool json = false;
};

int Run(const Options& o, const Io& io) {
  if (o.ids.empty() == o.state.empty()) {
    io.err << "uppzy-worker retry: give job ids, or --state failed (not both)\n";
    return kExitUsage;
  }
  if (!o.ids.empty() && (!o.error_kind.empty() || !o.since.empty())) {
    io.err << "uppzy-worker retry: --error-kind and --since go with --state failed, not with ids\n";
    return kExitUsage;
  }
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  try {
    OpsStore ops(url);
    nlohmann::json report = {{"requeued", 0}};
    int rc = kExitOk;
    if (!o.state.empty()) {
      std::optional<std::chrono::seconds> since;
      if (!o.since.empty()) since = ParseDuration(o.since);
      report["requeued"] = ops.JobsRetryFailed(o.error_kind, since);
    } else {
      const std::vector<int64_t> ids(o.ids.begin(), o.ids.end());
      const auto states = ops.JobsStates(ids);
      std::vector<int64_t> finished;
      report["unknown_ids"] = nlohmann::json::array();
      report["not_finished"] = nlohmann::json::array();
      for (int64_t id : ids) {
        auto it = states.find(id);
        if (it == states.end()) {
          io.err << "uppzy-worker retry: no job with id " << id << "\n";
          report["unknown_ids"].push_back(id);
          rc = kExitFailed;
        } else if (it->second != "completed" && it->second != "failed" && it->second != "cancelled") {
          io.err << "uppzy-worker retry: job " << id << " is not finished (" << it->second
                 << "); not requeued\n";
          report["not_finished"].push_back({{"id", id}, {"state", it->second}});
          rc = kExitFailed;
        } else {
          finished.push_back(id);
        }
      }
      report["requeued"] = ops.JobsRetry(finished);
    }
    if (o.json) {
      io.out << report.dump(2) << "\n";
    } else {
      io.out << "requeued " << report["requeued"].get<int>() << " job(s)\n";
    }
    return rc;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker retry: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddRetry(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("retry",
                             "Requeue finished jobs (state queued, attempts start over, error history kept)");
  c.app->add_option("ids", o->ids, "Job ids to requeue (completed, failed or cancelled)");
  c.app->add_option("--state", o->state, "Requeue every failed job (with --error-kind / --since to narrow)")
      ->check(CLI::IsMember({"failed"}));
  c.app->add_option("--error-kind", o->error_kind, "With --state failed: only this error_kind")
      ->check(ErrorKindValidator());
  c.app
      ->add_option("--since", o->since,
                   "With --state failed: only jobs that failed within this long (1h, 7d)")
      ->check(DurationValidator());
  c.app->add_flag("--json", o->json, "Print the result as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
