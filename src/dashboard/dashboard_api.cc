#include "http/dashboard_api.h"

#include <chrono>
#include <set>

#include "http/dashboard_params.h"
#include "uppzy/log.h"

namespace uppzy::http {
namespace {

using SteadyClock = std::chrono::steady_clock;

// "All that match" acts on at most this many jobs per request (the newest first); the answer says
// when the cap was reached so the operator can repeat it.
constexpr int kMatchingCap = 100000;
constexpr const char* kActionBodyHelp =
    "no body: send JSON {\"ids\": [1, 2]} or {\"filter\": {\"state\": \"failed\"}} "
    "(Content-Type: application/json), or the form ids=1,2 "
    "(Content-Type: application/x-www-form-urlencoded)";

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SendStoreError(Response& res, const StoreError& e) {
  const std::string& state = e.sqlstate();
  if (e.transient()) {
    SendError(res, 503, "database unavailable: " + FirstLine(e.what()));
  } else if (state.rfind("22", 0) == 0) {
    SendError(res, 400, "bad value: " + FirstLine(e.what()));
  } else if (state == "42501") {
    SendError(res, 403, "the dashboard's database role may not do this: " + FirstLine(e.what()));
  } else {
    LogEvent(spdlog::level::err, "dashboard_store_error", {{"sqlstate", state}});
    SendError(res, 500, "database error: " + FirstLine(e.what()));
  }
}

}  // namespace

void SendJson(Response& res, int status, const json& body) {
  res.status = status;
  res.content_type = "application/json; charset=utf-8";
  res.body = Dump(body) + "\n";
}

void SendError(Response& res, int status, const std::string& message) {
  SendJson(res, status, json{{"error", message}});
}

std::string DashboardApi::ComputeOverview() {
  const auto start = SteadyClock::now();
  json j = OverviewJson(pool_.With([](DashboardStore& s) { return s.OverviewRead(); }));
  j["read_only"] = read_only();
  j["show_text"] = options_.show_text;
  j["partial"] = false;
  j["computed_in_ms"] =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
  return Dump(j) + "\n";
}

// The last full overview with what an action may have changed read afresh (see OverviewSnapshots).
std::string DashboardApi::PatchOverview(const std::string& full) {
  json j = json::parse(full);
  const json live = OverviewJson(pool_.With([](DashboardStore& s) { return s.OverviewRead(false); }));
  for (auto& state : j["states"]) {
    for (const auto& fresh : live["states"]) {
      if (state["state"] == fresh["state"]) state = fresh;
    }
  }
  for (const char* key : {"now", "incidents", "workers", "feedback"}) j[key] = live[key];
  j["partial"] = true;
  return Dump(j) + "\n";
}

void DashboardApi::Overview(Response& res) {
  try {
    res.content_type = "application/json; charset=utf-8";
    res.body = overview_.Get();
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

void DashboardApi::JobsList(const Request& req, Response& res) {
  static const std::set<std::string> kKnown = {"state", "error_kind", "job_key", "session_id",
                                               "since", "until",      "after",   "limit"};
  for (const auto& [name, value] : req.query) {
    if (!kKnown.count(name)) {
      SendError(res, 400,
                "unknown parameter '" + name.substr(0, 64) +
                    "'; use state, error_kind, job_key, session_id, since, until, after, limit");
      return;
    }
    if (req.ParamCount(name) > 1) {
      SendError(res, 400, name + ": given more than once");
      return;
    }
  }
  const ParsedJobQuery q =
      ParseJobQuery([&](std::string_view name) -> std::optional<std::string> { return req.Param(name); },
                    NowMicros(), true);
  if (!q.error.empty()) {
    SendError(res, 400, q.error);
    return;
  }
  try {
    const DashboardJobPage page =
        pool_.With([&](DashboardStore& s) { return s.JobsPage(q.filter, q.after, q.limit); });
    json jobs = json::array();
    for (const auto& j : page.jobs) jobs.push_back(JobSummaryJson(j));
    SendJson(res, 200,
             json{{"jobs", jobs},
                  {"next", page.next ? json(EncodeCursor(*page.next)) : json(nullptr)},
                  {"limit", q.limit},
                  {"filter", FilterJson(q.filter)}});
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

void DashboardApi::JobGet(const std::string& id_text, Response& res) {
  auto id = ParseId(id_text);
  if (!id) {
    SendError(res, 400, "not a job id: use a positive whole number");
    return;
  }
  try {
    auto job = pool_.With([&](DashboardStore& s) { return s.JobsGet(*id); });
    if (!job) {
      SendError(res, 404, "no job with id " + std::to_string(*id));
      return;
    }
    json j = JobDetailJson(*job);
    if (options_.show_text) {
      try {
        auto text = pool_.With([&](DashboardStore& s) { return s.JobsText(*id); });
        if (text) {
          j["message"] = text->first;
          j["answer"] = text->second ? json(*text->second) : json(nullptr);
        }
      } catch (const StoreError& e) {
        if (e.transient()) throw;
        j["message"] = nullptr;
        j["answer"] = nullptr;
        j["text_error"] = "cannot read the message and answer: " + FirstLine(e.what());
      }
    }
    SendJson(res, 200, j);
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

// POST /api/jobs/retry | /api/jobs/cancel with {"ids": [..]} or {"filter": {..}}.
void DashboardApi::JobsAct(const Request& req, Response& res, bool retry) {
  json body;
  if (req.Header("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0) {
    const ParsedFormIds form = ParseFormIds(ParseForm(req.body), kMaxActionIds);
    if (!form.error.empty()) {
      SendError(res, 400, form.error);
      return;
    }
    body = json{{"ids", form.ids}};
  } else if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) {
    SendError(res, 400, kActionBodyHelp);
    return;
  } else {
    body = json::parse(req.body, nullptr, false);
  }
  if (body.is_discarded() || !body.is_object()) {
    SendError(res, 400,
              "the body must be a JSON object: {\"ids\": [1, 2]} or {\"filter\": {\"state\": \"failed\"}}");
    return;
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "ids" && key != "filter") {
      SendError(res, 400, "unknown field '" + key.substr(0, 64) + "'; give \"ids\" or \"filter\"");
      return;
    }
  }
  const bool has_ids = body.contains("ids");
  const bool has_filter = body.contains("filter");
  if (has_ids == has_filter) {
    SendError(res, 400, "give either \"ids\" (a list of job ids) or \"filter\" (all jobs that match it)");
    return;
  }
  const char* done_key = retry ? "requeued" : "cancelled";
  try {
    if (has_ids) {
      const json& ids_json = body["ids"];
      std::vector<int64_t> ids;
      bool ok = ids_json.is_array() && !ids_json.empty() && ids_json.size() <= kMaxActionIds;
      for (const auto& v : ids_json) {
        if (!ok) break;
        if (!v.is_number_integer() || v.get<int64_t>() <= 0) {
          ok = false;
          break;
        }
        ids.push_back(v.get<int64_t>());
      }
      if (!ok) {
        SendError(
            res, 400,
            "ids: a list of 1 to " + std::to_string(kMaxActionIds) + " job ids (positive whole numbers)");
        return;
      }
      const int n =
          pool_.With([&](DashboardStore& s) { return retry ? s.JobsRetry(ids) : s.JobsCancel(ids); }, false);
      overview_.Invalidate();
      LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
               {{"requested", std::to_string(ids.size())}, {done_key, std::to_string(n)}});
      SendJson(res, 200, json{{"requested", ids.size()}, {done_key, n}});
      return;
    }
    const json& f = body["filter"];
    if (!f.is_object()) {
      SendError(res, 400,
                "filter: an object such as {\"state\": \"failed\", \"error_kind\": \"server_error\"}");
      return;
    }
    for (const auto& [key, value] : f.items()) {
      static const std::set<std::string> kKnown = {"state",      "error_kind", "job_key",
                                                   "session_id", "since",      "until"};
      if (!kKnown.count(key)) {
        SendError(res, 400,
                  "filter: unknown field '" + key.substr(0, 64) +
                      "'; use state, error_kind, job_key, session_id, since, until");
        return;
      }
      if (!value.is_string()) {
        SendError(res, 400, "filter." + key + ": a string");
        return;
      }
    }
    const ParsedJobQuery q = ParseJobQuery(
        [&](std::string_view name) -> std::optional<std::string> {
          const std::string key(name);
          if (!f.contains(key)) return std::nullopt;
          return f[key].get<std::string>();
        },
        NowMicros(), false);
    if (!q.error.empty()) {
      SendError(res, 400, "filter." + q.error);
      return;
    }
    if (q.filter.empty()) {
      SendError(res, 400,
                "filter: give at least one of state, error_kind, job_key, session_id, since, until");
      return;
    }
    const int n = pool_.With(
        [&](DashboardStore& s) {
          return retry ? s.JobsRetryMatching(q.filter, kMatchingCap)
                       : s.JobsCancelMatching(q.filter, kMatchingCap);
        },
        false);
    overview_.Invalidate();
    LogEvent(spdlog::level::info, retry ? "dashboard_retry_matching" : "dashboard_cancel_matching",
             {{done_key, std::to_string(n)}});
    SendJson(res, 200, json{{done_key, n}, {"filter", FilterJson(q.filter)}, {"capped", n >= kMatchingCap}});
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

// POST /api/jobs/{id}/retry | cancel.
void DashboardApi::JobAct(const std::string& id_text, Response& res, bool retry) {
  auto id = ParseId(id_text);
  if (!id) {
    SendError(res, 400, "not a job id: use a positive whole number");
    return;
  }
  try {
    auto job = pool_.With([&](DashboardStore& s) { return s.JobsGet(*id); });
    if (!job) {
      SendError(res, 404, "no job with id " + std::to_string(*id));
      return;
    }
    const bool finished = Finished(job->state);
    if (retry && !finished) {
      SendError(res, 409,
                "job " + std::to_string(*id) + " is " + job->state +
                    "; only completed, failed or cancelled jobs can be retried");
      return;
    }
    if (!retry && finished) {
      SendError(
          res, 409,
          "job " + std::to_string(*id) + " is " + job->state + "; only unfinished jobs can be cancelled");
      return;
    }
    const int n = pool_.With(
        [&](DashboardStore& s) { return retry ? s.JobsRetry({*id}) : s.JobsCancel({*id}); }, false);
    overview_.Invalidate();
    if (n == 0) {
      SendError(res, 409, "job " + std::to_string(*id) + " changed meanwhile; reload it");
      return;
    }
    auto after = pool_.With([&](DashboardStore& s) { return s.JobsGet(*id); });
    LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
             {{"job_id", std::to_string(*id)}});
    SendJson(res, 200,
             json{{"id", *id},
                  {retry ? "requeued" : "cancelled", n},
                  {"state", after ? json(after->state) : json(nullptr)}});
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

void DashboardApi::IncidentResolve(const std::string& id_text, Response& res) {
  auto id = ParseId(id_text);
  if (!id) {
    SendError(res, 400, "not an incident id: use a positive whole number");
    return;
  }
  try {
    const auto r = pool_.With([&](DashboardStore& s) { return s.IncidentsResolve(*id); }, false);
    overview_.Invalidate();
    switch (r) {
      case DashboardStore::ResolveResult::kResolved:
        LogEvent(spdlog::level::info, "dashboard_incident_resolved", {{"incident_id", std::to_string(*id)}});
        SendJson(res, 200, json{{"id", *id}, {"resolved", true}});
        return;
      case DashboardStore::ResolveResult::kAlreadyResolved:
        SendError(res, 409, "incident " + std::to_string(*id) + " is already resolved");
        return;
      case DashboardStore::ResolveResult::kNotFound:
        SendError(res, 404, "no incident with id " + std::to_string(*id));
        return;
    }
  } catch (const StoreError& e) {
    SendStoreError(res, e);
  }
}

}  // namespace uppzy::http
