// uppzy-worker cancel ID... [--json]: cancels unfinished jobs through uppzy.cancel_jobs. A queued or
// retrying job is cancelled at once; a submitting or polling one gets cancel_requested_at and the
// worker holding it finishes it as cancelled within seconds.
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

struct Options {
  std::vector<long long> ids;
  bool json = false;
};

std::string Join(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : ", ") + std::to_string(id);
  return s;
}

int Run(const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  try {
    OpsStore ops(url);
    const std::vector<int64_t> ids(o.ids.begin(), o.ids.end());
    const auto before = ops.JobsStates(ids);
    int rc = kExitOk;
    std::vector<int64_t> to_cancel, unknown, already_cancelled;
    nlohmann::json finished = nlohmann::json::array();
    for (int64_t id : ids) {
      auto it = before.find(id);
      if (it == before.end()) {
        io.err << "uppzy-worker cancel: no job with id " << id << "\n";
        unknown.push_back(id);
        rc = kExitFailed;
      } else if (it->second == "cancelled") {
        already_cancelled.push_back(id);
      } else if (it->second == "completed" || it->second == "failed") {
        io.err << "uppzy-worker cancel: job " << id << " is already " << it->second << "; not cancelled\n";
        finished.push_back({{"id", id}, {"state", it->second}});
        rc = kExitFailed;
      } else {
        to_cancel.push_back(id);
      }
    }
    ops.JobsCancel(to_cancel);
    // What each one became: cancelled at once, or asked to cancel while a worker holds it.
    std::vector<int64_t> cancelled, requested;
    for (const auto& [id, state] : ops.JobsStates(to_cancel)) {
      (state == "cancelled" ? cancelled : requested).push_back(id);
    }
    if (o.json) {
      io.out << nlohmann::json{{"cancelled", cancelled},
                               {"cancel_requested", requested},
                               {"already_cancelled", already_cancelled},
                               {"already_finished", finished},
                               {"unknown_ids", unknown}}
                    .dump(2)
             << "\n";
      return rc;
    }
    io.out << "cancelled " << cancelled.size() << " job(s) at once"
           << (cancelled.empty() ? "" : ": " + Join(cancelled)) << "\n";
    if (!requested.empty()) {
      io.out << "cancellation requested for " << requested.size() << " job(s) in flight: " << Join(requested)
             << " (the worker holding each finishes it as cancelled within seconds)\n";
    }
    if (!already_cancelled.empty()) io.out << "already cancelled: " << Join(already_cancelled) << "\n";
    return rc;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker cancel: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddCancel(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("cancel",
                             "Cancel unfinished jobs (queued/retrying at once, in-flight within seconds)");
  c.app->add_option("ids", o->ids, "Job ids to cancel")->required();
  c.app->add_flag("--json", o->json, "Print the result as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
