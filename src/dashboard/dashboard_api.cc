#include "dashboard/dashboard_api.h"

#include <chrono>
#include <set>

#include "dashboard/params.h"
#include "uppzy/error_text.h"
#include "uppzy/json_text.h"
#include "uppzy/log.h"

namespace uppzy::dashboard {
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

// What an action acts on: one job named in the path, the ids of a body, or every job that matches
// the filter of a body.
struct ActionTarget {
  bool one = false;
  std::vector<int64_t> ids;
  std::optional<DashboardJobFilter> filter;
};

ActionTarget ParseActionPath(const std::string& id_text, std::string* error) {
  ActionTarget t;
  auto id = ParseId(id_text);
  if (!id) {
    *error = "not a job id: use a positive whole number";
    return t;
  }
  t.one = true;
  t.ids = {*id};
  return t;
}

// The body of POST /api/jobs/retry | cancel: {"ids": [..]} or {"filter": {..}} as JSON, or the form
// ids=1,2,3.
ActionTarget ParseActionBody(const Request& req, std::string* error) {
  ActionTarget t;
  json body;
  if (req.Header("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0) {
    ParsedFormIds form = ParseFormIds(http::ParseForm(req.body), kMaxActionIds);
    *error = std::move(form.error);
    t.ids = std::move(form.ids);
    return t;
  }
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) {
    *error = kActionBodyHelp;
    return t;
  }
  body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    *error = "the body must be a JSON object: {\"ids\": [1, 2]} or {\"filter\": {\"state\": \"failed\"}}";
    return t;
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "ids" && key != "filter") {
      *error = "unknown field '" + key.substr(0, 64) + "'; give \"ids\" or \"filter\"";
      return t;
    }
  }
  const bool has_ids = body.contains("ids");
  if (has_ids == body.contains("filter")) {
    *error = "give either \"ids\" (a list of job ids) or \"filter\" (all jobs that match it)";
    return t;
  }
  if (has_ids) {
    const json& ids_json = body["ids"];
    bool ok = ids_json.is_array() && !ids_json.empty() && ids_json.size() <= kMaxActionIds;
    for (const auto& v : ids_json) {
      if (!ok) break;
      if (!v.is_number_integer() || v.get<int64_t>() <= 0) {
        ok = false;
        break;
      }
      t.ids.push_back(v.get<int64_t>());
    }
    if (!ok) {
      t.ids.clear();
      *error = "ids: a list of 1 to " + std::to_string(kMaxActionIds) + " job ids (positive whole numbers)";
    }
    return t;
  }
  const json& f = body["filter"];
  if (!f.is_object()) {
    *error = "filter: an object such as {\"state\": \"failed\", \"error_kind\": \"server_error\"}";
    return t;
  }
  static const std::set<std::string> kKnown = {"state",      "error_kind", "job_key",
                                               "session_id", "since",      "until"};
  for (const auto& [key, value] : f.items()) {
    if (!kKnown.count(key)) {
      *error = "filter: unknown field '" + key.substr(0, 64) +
               "'; use state, error_kind, job_key, session_id, since, until";
      return t;
    }
    if (!value.is_string()) {
      *error = "filter." + key + ": a string";
      return t;
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
    *error = "filter." + q.error;
  } else if (q.filter.empty()) {
    *error = "filter: give at least one of state, error_kind, job_key, session_id, since, until";
  } else {
    t.filter = q.filter;
  }
  return t;
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
    for (const auto& j : page.jobs) jobs.push_back(JobRowJson(j));
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
    json j = DashboardJobDetailJson(*job);
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

void DashboardApi::JobsAct(const Request& req, Response& res, bool retry, const std::string& id_text) {
  std::string error;
  const ActionTarget target =
      id_text.empty() ? ParseActionBody(req, &error) : ParseActionPath(id_text, &error);
  if (!error.empty()) {
    SendError(res, 400, error);
    return;
  }
  const char* done_key = retry ? "requeued" : "cancelled";
  try {
    if (target.filter) {
      const int n = pool_.With(
          [&](DashboardStore& s) {
            return retry ? s.JobsRetryMatching(*target.filter, kMatchingCap)
                         : s.JobsCancelMatching(*target.filter, kMatchingCap);
          },
          false);
      overview_.Invalidate();
      LogEvent(spdlog::level::info, retry ? "dashboard_retry_matching" : "dashboard_cancel_matching",
               {{done_key, std::to_string(n)}});
      SendJson(res, 200,
               json{{done_key, n}, {"filter", FilterJson(*target.filter)}, {"capped", n >= kMatchingCap}});
      return;
    }
    // One job named in the path: say why when the action does not apply to it.
    if (target.one) {
      const int64_t id = target.ids.front();
      auto job = pool_.With([&](DashboardStore& s) { return s.JobsGet(id); });
      if (!job) {
        SendError(res, 404, "no job with id " + std::to_string(id));
        return;
      }
      const bool finished = Finished(job->state);
      if (retry && !finished) {
        SendError(res, 409,
                  "job " + std::to_string(id) + " is " + job->state +
                      "; only completed, failed or cancelled jobs can be retried");
        return;
      }
      if (!retry && finished) {
        SendError(
            res, 409,
            "job " + std::to_string(id) + " is " + job->state + "; only unfinished jobs can be cancelled");
        return;
      }
    }
    const int n = pool_.With(
        [&](DashboardStore& s) { return retry ? s.JobsRetry(target.ids) : s.JobsCancel(target.ids); }, false);
    overview_.Invalidate();
    if (!target.one) {
      LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
               {{"requested", std::to_string(target.ids.size())}, {done_key, std::to_string(n)}});
      SendJson(res, 200, json{{"requested", target.ids.size()}, {done_key, n}});
      return;
    }
    const int64_t id = target.ids.front();
    if (n == 0) {
      SendError(res, 409, "job " + std::to_string(id) + " changed meanwhile; reload it");
      return;
    }
    auto after = pool_.With([&](DashboardStore& s) { return s.JobsGet(id); });
    LogEvent(spdlog::level::info, retry ? "dashboard_retry" : "dashboard_cancel",
             {{"job_id", std::to_string(id)}});
    SendJson(res, 200,
             json{{"id", id}, {done_key, n}, {"state", after ? json(after->state) : json(nullptr)}});
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

}  // namespace uppzy::dashboard
