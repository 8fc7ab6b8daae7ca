// The dashboard's JSON of the store's values (the shapes /api/* answer). Pure; never throws except
// std::bad_alloc.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "uppzy/dashboard_store.h"

namespace uppzy::http {

using nlohmann::json;

// Compact JSON; invalid UTF-8 is replaced, never thrown.
std::string Dump(const json& j);
// The first line of an error text.
std::string FirstLine(const std::string& s);

json JobSummaryJson(const DashboardJobRow& j);
json JobDetailJson(const DashboardJobDetail& j);  // with "actions": which of retry/cancel apply
json OverviewJson(const DashboardOverview& o);
json FilterJson(const DashboardJobFilter& f);  // only the fields that are set
// completed, failed or cancelled.
bool Finished(const std::string& state);

}  // namespace uppzy::http
