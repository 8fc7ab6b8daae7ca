// The JSON views of a job and of the overview: the shapes the dashboard's /api/* answers, and what
// `uppzy-worker jobs --json`, `show --json` and `stats --json` print. One place builds them, so a
// field reads the same in the browser, in a script and in a terminal: an empty text or a missing
// number is null, a JSON column is nested as JSON (or kept as text if unreadable).
// Pure; never throws but std::bad_alloc.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "uppzy/dashboard_store.h"
#include "uppzy/ops_store.h"

namespace uppzy::dashboard {

using nlohmann::json;

// null for "" / nullopt, else the value.
json Opt(const std::string& s);
json Opt(const std::optional<double>& v);
json Opt(const std::optional<int>& v);
// `text` parsed as JSON; `fallback` when it is "", the text itself when it is not JSON.
json ParsedOr(const std::string& text, json fallback);

// A listed job (jobs --json); JobRowJson adds what the dashboard's listing shows (last_error,
// cancel_requested_at).
json JobSummaryJson(const JobSummary& j);
json JobRowJson(const DashboardJobRow& j);
// One job without its text (show --json adds message and answer when asked); DashboardJobDetailJson
// adds the notification the trigger sent and "actions": which of retry/cancel apply.
json JobDetailJson(const JobDetail& j);
json DashboardJobDetailJson(const DashboardJobDetail& j);

// A row of uppzy.chat_job_stats, and the jobs' columns of uppzy.chat_job_health (stats --json adds
// the feedback columns; the dashboard has its own feedback table).
json StateCountJson(const StateCount& s);
json HealthWindowJson(const HealthWindow& h);
// The overview; its "sites" (full reads only) is one object per site, site_id null for the default.
json OverviewJson(const DashboardOverview& o);
json FilterJson(const DashboardJobFilter& f);  // only the fields that are set

// completed, failed or cancelled.
bool Finished(const std::string& state);

}  // namespace uppzy::dashboard
