// The dashboard's JSON API behind the gate (dashboard_server.cc does routing, sign-in and CSRF):
//   GET  /api/overview, /api/jobs?..., /api/jobs/{id}
//   POST /api/jobs/retry | cancel with a JSON body {"ids": [..]} or {"filter": {..}}, or the form
//        ids=1,2,3 (ids=1&ids=2 also); /api/jobs/{id}/retry | cancel; /api/incidents/{id}/resolve
// Every answer is JSON; errors are {"error": "..."} (see dashboard_server.h for the statuses).
// Thread-safe: the methods are called from the server's request threads at once; the store pool and
// the snapshots do their own locking. Nothing throws but std::bad_alloc (store errors become 4xx/5xx).
#pragma once

#include <cstddef>
#include <string>

#include "dashboard/dashboard_server.h"
#include "dashboard/json_views.h"
#include "dashboard/overview_snapshots.h"
#include "dashboard/store_pool.h"
#include "http/server.h"

namespace uppzy::dashboard {

using http::Request;
using http::Response;

// Ids one action takes (README), and the body limit of an action: 10,000 ids of 19 digits fit in
// either encoding (about 220 KB as JSON, 200 KB as a form) with room to spare.
inline constexpr size_t kMaxActionIds = 10000;
inline constexpr size_t kMaxActionBodyBytes = 1 << 20;

void SendJson(Response& res, int status, const json& body);
void SendError(Response& res, int status, const std::string& message);

class DashboardApi {
 public:
  DashboardApi(const DashboardOptions& options, StorePool& pool, OverviewSnapshots& overview)
      : options_(options), pool_(pool), overview_(overview) {}

  // The full overview JSON, and the last one with what actions change read afresh. Throw StoreError.
  std::string ComputeOverview();
  std::string PatchOverview(const std::string& full);

  void Overview(Response& res);
  void JobsList(const Request& req, Response& res);
  void JobGet(const std::string& id_text, Response& res);
  // POST /api/jobs/retry | cancel (`id_text` "": the ids or filter of the body) and
  // /api/jobs/{id}/retry | cancel (`id_text` the path's id: 404/409 say why the job cannot be acted on).
  void JobsAct(const Request& req, Response& res, bool retry, const std::string& id_text);
  void IncidentResolve(const std::string& id_text, Response& res);

 private:
  bool read_only() const { return options_.token.empty(); }

  const DashboardOptions& options_;
  StorePool& pool_;
  OverviewSnapshots& overview_;
};

}  // namespace uppzy::dashboard
