// uppzy-worker sites [list] [--json] | set SITE [--requests-per-s N|none] [--burst N|none]
//   [--max-in-flight N|none] [--poll-interval-ms N|none] [--poll-timeout-ms N|none]
//   [--poll-mode fixed|adaptive|none] [--poll-target-delay-ms N|none] [--json]
//   | pause SITE [--reason TEXT] [--json] | resume SITE [--json]
// The rows of uppzy.sites with their queues (uppzy.site_queues), and the operator's changes to them.
// A value the table's named constraints refuse is a usage error (exit 2) that names the setting.
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "cli/table.h"
#include "cli/validators.h"
#include "dashboard/json_views.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

using dashboard::Opt;
using nlohmann::json;

struct Options {
  std::string site;
  // set: each as typed (checked by IntOrNoneValidator / NumberOrNoneValidator); nullopt: not given.
  std::optional<std::string> requests_per_s, burst, max_in_flight, poll_interval_ms, poll_timeout_ms,
      poll_mode, poll_target_delay_ms;
  std::optional<std::string> reason;  // pause
  bool json = false;
};

// The named CHECK constraints of uppzy.sites (migrations/0008_sites.sql), as the operator typed them.
struct Refusal {
  const char* constraint;
  const char* message;
};
constexpr Refusal kRefusals[] = {
    {"sites_requests_per_s_positive", "--requests-per-s must be a number above 0"},
    {"sites_burst_positive", "--burst must be at least 1"},
    {"sites_max_in_flight_positive", "--max-in-flight must be at least 1"},
    {"sites_poll_interval_range", "--poll-interval-ms must be between 10 and 600000"},
    {"sites_poll_timeout_range", "--poll-timeout-ms must be between 100 and 3600000"},
    {"sites_poll_mode_valid", "--poll-mode must be fixed or adaptive"},
    {"sites_poll_target_delay_range", "--poll-target-delay-ms must be between 100 and 600000"},
    {"sites_paused_reason_length", "--reason must be at most 500 characters"},
    {"sites_site_id_valid", "SITE must be 1 to 128 letters, digits, '-', '_' or '.', and not '.' or '..'"},
};

// The readable message of a constraint of uppzy.sites named in `e`, or "" for any other error.
std::string RefusalOf(const StoreError& e) {
  const std::string what = e.what();
  const std::string marker = "constraint \"";
  const auto at = what.find(marker);
  if (at == std::string::npos) return "";
  const auto start = at + marker.size();
  const std::string name = what.substr(start, what.find('"', start) - start);
  for (const auto& r : kRefusals) {
    if (name == r.constraint) return std::string(r.message) + " (constraint " + name + ")";
  }
  return "";
}

json SiteJson(const SiteRow& s) {
  return {{"site_id", Opt(s.site_id)},
          {"requests_per_s", Opt(s.settings.requests_per_s)},
          {"burst", Opt(s.settings.burst)},
          {"max_in_flight", Opt(s.settings.max_in_flight)},
          {"poll_interval_ms", Opt(s.settings.poll_interval_ms)},
          {"poll_timeout_ms", Opt(s.settings.poll_timeout_ms)},
          {"poll_mode", s.settings.poll_mode ? json(*s.settings.poll_mode) : json(nullptr)},
          {"poll_target_delay_ms", Opt(s.settings.poll_target_delay_ms)},
          {"paused_at", Opt(s.paused_at)},
          {"paused_reason", Opt(s.paused_reason)}};
}

// {"burst": {"from": null, "to": 10}, ...}: every field whose value the change moved.
json Changed(const SiteChange& c) {
  const json before = c.before ? SiteJson(*c.before) : json::object();
  const json after = SiteJson(c.after);
  json out = json::object();
  for (const auto& [field, to] : after.items()) {
    const json from = before.value(field, json());
    if (field != "site_id" && from != to) out[field] = {{"from", from}, {"to", to}};
  }
  return out;
}

std::string Cell(const json& v) {
  if (v.is_null()) return "none";
  return v.is_string() ? v.get<std::string>() : v.dump();
}

int PrintChange(const SiteChange& c, const Options& o, const Io& io) {
  const json changed = Changed(c);
  if (o.json) {
    io.out << json{{"site_id", c.after.site_id},
                   {"created", !c.before.has_value()},
                   {"changed", changed},
                   {"site", SiteJson(c.after)}}
                  .dump(2)
           << "\n";
    return kExitOk;
  }
  io.out << "site " << c.after.site_id
         << (!c.before         ? ": created"
             : changed.empty() ? ": nothing changed"
                               : ":")
         << "\n";
  for (const auto& [field, v] : changed.items()) {
    io.out << "  " << field << ": " << Cell(v["from"]) << " -> " << Cell(v["to"]) << "\n";
  }
  return kExitOk;
}

// One site of the listing, with the field names of --json.
json ListRow(const SiteStatus& s) {
  json row = SiteJson(s.site);
  row["queued"] = s.queued;
  row["retrying"] = s.retrying;
  row["submitting"] = s.submitting;
  row["polling"] = s.polling;
  row["oldest_queued_age_s"] = Opt(s.oldest_queued_age_s);
  row["served"] = s.served;
  row["effective_rate_per_s"] = Opt(s.effective_rate_per_s);
  row["blocked_until"] = s.blocked_until.empty() ? json(nullptr) : json(s.blocked_until);
  row["rate_limited"] = s.rate_limited;
  row["tokens_granted"] = s.tokens_granted;
  row["open_incidents"] = s.open_incidents;
  return row;
}

int List(const Options& o, OpsStore& ops, const Io& io) {
  const auto sites = ops.SitesList();
  json rows = json::array();
  for (const auto& s : sites) rows.push_back(ListRow(s));
  if (o.json) {
    io.out << rows.dump(2) << "\n";
    return kExitOk;
  }
  const std::vector<std::string> counts = {"queued", "retrying", "submitting", "polling"};
  const std::vector<std::string> settings = {"requests_per_s",       "burst",           "max_in_flight",
                                             "poll_interval_ms",     "poll_timeout_ms", "poll_mode",
                                             "poll_target_delay_ms", "paused_at",       "paused_reason"};
  std::vector<std::string> header = {"site"};
  header.insert(header.end(), counts.begin(), counts.end());
  header.insert(header.end(), {"oldest", "served"});
  header.insert(header.end(), settings.begin(), settings.end());
  Table t(header);
  for (size_t i = 0; i < sites.size(); ++i) {
    const json& row = rows[i];
    std::vector<std::string> cells = {sites[i].is_default ? "(default)" : sites[i].site.site_id};
    for (const auto& f : counts) cells.push_back(row[f].dump());
    cells.push_back(sites[i].oldest_queued_age_s ? HumanSeconds(*sites[i].oldest_queued_age_s) : "");
    cells.push_back(sites[i].served ? "yes" : "no");
    for (const auto& f : settings) cells.push_back(row[f].is_null() ? "" : Cell(row[f]));
    t.Row(std::move(cells));
  }
  t.Print(io.out, 40);
  return kExitOk;
}

SiteSettingsChange ChangeOf(const Options& o) {
  SiteSettingsChange c;
  // The validators accepted each given value, so parsing cannot fail here.
  if (o.requests_per_s) c.requests_per_s = *ParseNumberOrNone(*o.requests_per_s);
  if (o.burst) c.burst = *ParseIntOrNone(*o.burst);
  if (o.max_in_flight) c.max_in_flight = *ParseIntOrNone(*o.max_in_flight);
  if (o.poll_interval_ms) c.poll_interval_ms = *ParseIntOrNone(*o.poll_interval_ms);
  if (o.poll_timeout_ms) c.poll_timeout_ms = *ParseIntOrNone(*o.poll_timeout_ms);
  if (o.poll_mode) {
    c.poll_mode =
        *o.poll_mode == "none" ? std::optional<std::string>() : std::optional<std::string>(*o.poll_mode);
  }
  if (o.poll_target_delay_ms) c.poll_target_delay_ms = *ParseIntOrNone(*o.poll_target_delay_ms);
  return c;
}

int Run(const std::string& action, const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  try {
    OpsStore ops(url);
    if (action == "list") return List(o, ops, io);
    if (action == "set") return PrintChange(ops.SitesSet(o.site, ChangeOf(o)), o, io);
    if (action == "pause") return PrintChange(ops.SitesPause(o.site, o.reason), o, io);
    const auto resumed = ops.SitesResume(o.site);
    if (!resumed) {
      io.err << "uppzy-worker sites resume: no site '" << o.site << "' in uppzy.sites\n";
      return kExitFailed;
    }
    return PrintChange(*resumed, o, io);
  } catch (const StoreError& e) {
    const std::string refusal = RefusalOf(e);
    if (!refusal.empty()) {
      io.err << "uppzy-worker sites " << action << " " << o.site << ": refused, nothing changed: " << refusal
             << "\n";
      return kExitUsage;
    }
    io.err << "uppzy-worker sites " << action << ": " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

CLI::App* AddAction(CLI::App& sites, const std::string& name, const std::string& help, Options& o) {
  auto* sub = sites.add_subcommand(name, help);
  if (name != "list") {
    sub->add_option("site", o.site, "The site_id (as in UPPZY_SITE_ID)")
        ->required()
        ->check(SiteIdValidator());
  }
  sub->add_flag("--json", o.json, "Print as JSON");
  return sub;
}

}  // namespace

Command AddSites(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("sites", "List the Uppzy sites with their queues; set, pause or resume one");
  c.app->require_subcommand(0, 1);
  c.app->add_flag("--json", o->json, "With no action (list): print as JSON");
  AddAction(*c.app, "list", "Every site (and the default one) with its queue and settings (the default)", *o);
  auto* set = AddAction(*c.app, "set",
                        "Create a site or change the settings given (none: NULL, the worker's own)", *o);
  set->add_option("--requests-per-s", o->requests_per_s, "Requests per second across every worker")
      ->check(NumberOrNoneValidator());
  set->add_option("--burst", o->burst, "Requests above the rate a moment may take")
      ->check(IntOrNoneValidator());
  set->add_option("--max-in-flight", o->max_in_flight, "Jobs submitted and not finished, across every worker")
      ->check(IntOrNoneValidator());
  set->add_option("--poll-interval-ms", o->poll_interval_ms, "Overrides UPPZY_POLL_INTERVAL_MS")
      ->check(IntOrNoneValidator());
  set->add_option("--poll-timeout-ms", o->poll_timeout_ms, "Overrides UPPZY_POLL_TIMEOUT_MS")
      ->check(IntOrNoneValidator());
  set->add_option("--poll-mode", o->poll_mode, "Overrides UPPZY_POLL_MODE: fixed, adaptive or none")
      ->check(CLI::IsMember({"fixed", "adaptive", "none"}));
  set->add_option("--poll-target-delay-ms", o->poll_target_delay_ms, "Overrides UPPZY_POLL_TARGET_DELAY_MS")
      ->check(IntOrNoneValidator());
  auto* pause =
      AddAction(*c.app, "pause",
                "Stop new Uppzy calls for a site (creates its row if missing; a pause keeps its start)", *o);
  pause->add_option("--reason", o->reason, "Why, for the other operators (at most 500 characters)");
  AddAction(*c.app, "resume", "Clear a site's pause", *o);
  c.run = [o, sites = c.app](const Io& io) {
    const auto chosen = sites->get_subcommands();
    return Run(chosen.empty() ? "list" : chosen.front()->get_name(), *o, io);
  };
  return c;
}

}  // namespace uppzy::cli
