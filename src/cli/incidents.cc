// uppzy-worker incidents [list | all | resolve ID... | resolve --all] [--json]
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy::cli {
namespace {

struct Options {
  std::string action = "list";
  std::vector<long long> ids;
  bool all = false;
  bool json = false;
};

int Run(const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  if (o.action == "resolve" && !o.all && o.ids.empty()) {
    io.err << "uppzy-worker incidents resolve: give incident ids or --all\n";
    return kExitUsage;
  }
  try {
    if (o.action == "resolve") {
      // Through uppzy.resolve_incident / resolve_all_incidents, which uppzy_operator may run.
      OpsStore ops(url);
      if (o.all) {
        io.out << "resolved " << ops.IncidentsResolveAll() << " incident(s)\n";
        return kExitOk;
      }
      int rc = kExitOk;
      for (long long id : o.ids) {
        if (ops.IncidentsResolve(id)) {
          io.out << "resolved incident " << id << "\n";
        } else {
          io.err << "no open incident with id " << id << "\n";
          rc = kExitFailed;
        }
      }
      return rc;
    }
    Store store(url);
    auto list = store.IncidentsList(o.action != "all");
    if (o.json) {
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
      io.out << j.dump(2) << "\n";
      return kExitOk;
    }
    if (list.empty()) io.out << (o.action == "all" ? "no incidents\n" : "no open incidents\n");
    for (const auto& i : list) {
      io.out << "#" << i.id << "  " << i.kind << " (HTTP " << i.http_status << ")  key "
             << i.api_key_fingerprint << "  opened " << i.opened_at
             << (i.resolved_at.empty() ? "  OPEN" : "  resolved " + i.resolved_at) << "\n    " << i.detail
             << "\n";
    }
    return kExitOk;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker incidents: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddIncidents(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("incidents", "List or resolve 401/403 configuration incidents");
  c.app->add_option("action", o->action, "list (open ones, the default), all, or resolve")
      ->check(CLI::IsMember({"list", "all", "resolve"}));
  c.app->add_option("ids", o->ids, "Incident ids to resolve");
  c.app->add_flag("--all", o->all, "With resolve: resolve every open incident");
  c.app->add_flag("--json", o->json, "Print the listing as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
