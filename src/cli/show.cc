// uppzy-worker show ID [--show-text] [--json]: one job with its full error history. The message and
// answer text are printed only with --show-text (and need a database role that may read them).
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "dashboard/json_views.h"
#include "uppzy/ops_store.h"

namespace uppzy::cli {
namespace {

using dashboard::JobDetailJson;
using dashboard::ParsedOr;
using nlohmann::json;

struct Options {
  long long id = 0;
  bool show_text = false;
  bool json = false;
};

std::string Field(const json& e, const char* key) {
  if (!e.contains(key) || e[key].is_null()) return "-";
  return e[key].is_string() ? e[key].get<std::string>() : e[key].dump();
}

int Run(const Options& o, const Io& io) {
  const std::string url = DatabaseUrlOrComplain(io);
  if (url.empty()) return kExitUsage;
  try {
    OpsStore ops(url);
    auto found = ops.JobsGet(o.id, o.show_text);
    if (!found) {
      io.err << "uppzy-worker show: no job with id " << o.id << "\n";
      return kExitFailed;
    }
    const JobDetail& j = *found;
    const json errors = ParsedOr(j.errors_json, json::array());
    if (o.json) {
      json out = JobDetailJson(j);
      if (o.show_text) {
        out["message"] = j.message ? json(*j.message) : json(nullptr);
        out["answer"] = j.answer ? json(*j.answer) : json(nullptr);
      }
      io.out << out.dump(2) << "\n";
      return kExitOk;
    }
    auto line = [&](const char* name, const std::string& value) {
      std::string label = name;
      label.resize(20, ' ');
      io.out << "  " << label << (value.empty() ? "-" : value) << "\n";
    };
    io.out << "job " << j.id << (j.job_key.empty() ? "" : "  (job_key " + j.job_key + ")") << "\n";
    line("state", j.state);
    line("attempts", std::to_string(j.attempts) + " of " + std::to_string(j.max_attempts));
    line("error_kind", j.error_kind);
    line("last_http_status", j.last_http_status ? std::to_string(j.last_http_status) : "");
    line("last_error", j.last_error);
    line("session_id", j.session_id);
    line("response_language", j.response_language);
    line("priority", std::to_string(j.priority));
    line("request_id", j.request_id);
    line("polls", std::to_string(j.polls));
    line("created_at", j.created_at);
    line("run_at", j.run_at);
    line("submitted_at", j.submitted_at);
    line("poll_deadline", j.poll_deadline);
    line("updated_at", j.updated_at);
    line("finished_at", j.finished_at);
    line("cancel_requested_at", j.cancel_requested_at);
    line("locked_by", j.locked_by);
    line("lease_expires_at", j.lease_expires_at);
    line("metadata", j.metadata_json);
    line("result", j.result_json);
    io.out << "errors (" << errors.size() << "):\n";
    if (errors.empty()) io.out << "  none\n";
    int n = 0;
    for (const auto& e : errors) {
      io.out << "  " << ++n << ". " << Field(e, "at") << "  attempt " << Field(e, "attempt") << "  "
             << Field(e, "kind") << "  http " << Field(e, "http_status") << "  request_id "
             << Field(e, "request_id") << "\n     " << Field(e, "message") << "\n";
    }
    if (o.show_text) {
      io.out << "message:\n" << j.message.value_or("") << "\nanswer:\n" << j.answer.value_or("-") << "\n";
    } else {
      io.out << "message and answer: hidden (--show-text shows them)\n";
    }
    return kExitOk;
  } catch (const StoreError& e) {
    io.err << "uppzy-worker show: " << FirstLine(e.what()) << "\n";
    return kExitFailed;
  }
}

}  // namespace

Command AddShow(CLI::App& app) {
  auto o = std::make_shared<Options>();
  Command c;
  c.app = app.add_subcommand("show", "One job with its full error history (no message or answer text)");
  c.app->add_option("id", o->id, "The job id")->required();
  c.app->add_flag("--show-text", o->show_text, "Also print the message and the answer");
  c.app->add_flag("--json", o->json, "Print as JSON");
  c.run = [o](const Io& io) { return Run(*o, io); };
  return c;
}

}  // namespace uppzy::cli
