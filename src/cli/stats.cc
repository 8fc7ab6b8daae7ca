// uppzy-worker stats [--json]: uppzy.chat_job_stats and uppzy.chat_job_health as tables, plus the
// open incidents. The same views psql users and dashboards read, so the numbers always agree.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/table.h"
#include "dashboard/json_views.h"
#include "uppzy/ops_store.h"
#include "uppzy/store.h"

namespace uppzy::cli {
namespace {

using dashboard::HealthWindowJson;
using dashboard::Opt;
using dashboard::StateCountJson;
using nlohmann::json;

std::string Percent(const std::optional<double>& rate) {
  if (!rate) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", *rate * 100.0);
  return buf;
}

std::string Seconds(const std::optional<double>& s) {
  if (!s) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1fs", *s);
  return buf;
}

int Run(bool as_json, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  try {
    OpsStore ops(url);
    const auto states = ops.StatsByState();
    const auto health = ops.HealthWindows();
    const auto sites = ops.SitesPollingHealth();
    const long long failed_deliveries = ops.DeliveryFailuresCount();
    Store store(url);
    const auto incidents = store.IncidentsList(true);

    if (as_json) {
      json j = {{"states", json::array()}, {"health", json::array()}, {"open_incidents", json::array()}};
      for (const auto& s : states) j["states"].push_back(StateCountJson(s));
      for (const auto& h : health) {
        json window = HealthWindowJson(h);
        window["feedback_delivered"] = h.feedback_delivered;
        window["feedback_failed"] = h.feedback_failed;
        window["feedback_good"] = h.feedback_good;
        window["feedback_bad"] = h.feedback_bad;
        window["feedback_good_ratio"] = Opt(h.feedback_good_ratio);
        j["health"].push_back(std::move(window));
      }
      for (const auto& i : incidents) {
        j["open_incidents"].push_back({{"id", i.id},
                                       {"kind", i.kind},
                                       {"http_status", i.http_status},
                                       {"api_key_fingerprint", i.api_key_fingerprint},
                                       {"opened_at", i.opened_at},
                                       {"detail", i.detail}});
      }
      j["failed_deliveries"] = failed_deliveries;
      j["sites"] = json::array();
      for (const auto& s : sites) {
        j["sites"].push_back({{"site_id", s.site_id ? json(*s.site_id) : json(nullptr)},
                              {"completed", s.completed},
                              {"poll_timeouts", s.poll_timeouts},
                              {"status_calls_per_completed", Opt(s.status_calls_per_completed)},
                              {"seen_gap_p50_s", Opt(s.seen_gap_p50_s)},
                              {"seen_gap_p95_s", Opt(s.seen_gap_p95_s)},
                              {"answer_seen_p50_s", Opt(s.answer_seen_p50_s)}});
      }
      io.out << j.dump(2) << "\n";
      return kExitOk;
    }

    io.out << "Jobs by state (uppzy.chat_job_stats)\n";
    Table by_state({"state", "jobs", "oldest"});
    for (const auto& s : states) {
      by_state.Row(
          {s.state, std::to_string(s.jobs), s.oldest_age_seconds ? HumanSeconds(*s.oldest_age_seconds) : ""});
    }
    by_state.Print(io.out);

    io.out << "\nFinished jobs (uppzy.chat_job_health)\n";
    Table windows({"window", "finished", "completed", "failed", "cancelled", "poll_timeouts", "timeout_rate",
                   "retried", "retry_rate", "p50", "p95", "failures_by_kind"});
    for (const auto& h : health) {
      windows.Row({h.period, std::to_string(h.finished), std::to_string(h.completed),
                   std::to_string(h.failed), std::to_string(h.cancelled), std::to_string(h.poll_timeouts),
                   Percent(h.timeout_rate), std::to_string(h.retried), Percent(h.retry_rate),
                   Seconds(h.p50_seconds), Seconds(h.p95_seconds),
                   h.failures_by_kind_json == "{}" ? "" : h.failures_by_kind_json});
    }
    windows.Print(io.out, 80);

    io.out << "\nRatings (feedback columns of uppzy.chat_job_health)\n";
    Table ratings({"window", "delivered", "failed", "good", "bad", "good_ratio"});
    for (const auto& h : health) {
      ratings.Row({h.period, std::to_string(h.feedback_delivered), std::to_string(h.feedback_failed),
                   std::to_string(h.feedback_good), std::to_string(h.feedback_bad),
                   Percent(h.feedback_good_ratio)});
    }
    ratings.Print(io.out);
    io.out << "Failed deliveries (uppzy.delivery_failures): " << failed_deliveries << "\n";

    io.out << "\nPolling by site, last hour (uppzy.site_polling_health)\n";
    Table polling({"site", "completed", "poll_timeouts", "calls_per_answer", "seen_gap_p50", "seen_gap_p95",
                   "answer_p50"});
    for (const auto& s : sites) {
      char calls[32] = "";
      if (s.status_calls_per_completed)
        std::snprintf(calls, sizeof(calls), "%.2f", *s.status_calls_per_completed);
      polling.Row({s.site_id.value_or("(default)"), std::to_string(s.completed),
                   std::to_string(s.poll_timeouts), calls, Seconds(s.seen_gap_p50_s),
                   Seconds(s.seen_gap_p95_s), Seconds(s.answer_seen_p50_s)});
    }
    polling.Print(io.out);

    io.out << "\nOpen incidents: " << (incidents.empty() ? "none" : std::to_string(incidents.size())) << "\n";
    for (const auto& i : incidents) {
      io.out << "  #" << i.id << "  " << i.kind << " (HTTP " << i.http_status << ")  key "
             << i.api_key_fingerprint << "  opened " << i.opened_at << "  -> uppzy-worker incidents resolve "
             << i.id << "\n";
    }
    return kExitOk;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker stats: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddStats(CLI::App& app) {
  auto as_json = std::make_shared<bool>(false);
  Command c;
  c.app =
      app.add_subcommand("stats", "Jobs per state, the last hour and day of finished jobs, open incidents");
  c.app->add_flag("--json", *as_json, "Print as JSON");
  c.run = [as_json](const Io& io) { return Run(*as_json, io); };
  return c;
}

}  // namespace uppzy::cli
