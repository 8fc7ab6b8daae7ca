// The mock's own endpoints under /_mock/ (stats, requests, faults, reset, healthz): the part of MockApi
// that tests and benchmarks use to watch and steer it. The contract is documented in mock_server.h.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "mock/mock_api.h"
#include "uppzy/json_text.h"

namespace uppzy::mock {

using nlohmann::json;

Answer MockApi::Mock(std::string_view method, std::string_view path, std::string_view body, SteadyTime now) {
  const char* allow = nullptr;
  if (path == "/_mock/stats") {
    allow = "GET";
    if (method == allow) {
      Answer a;
      a.body = StatsJson(now);
      return a;
    }
  } else if (path == "/_mock/requests") {
    allow = "GET";
    if (method == allow) {
      Answer a;
      a.body = RequestsJson();
      return a;
    }
  } else if (path == "/_mock/healthz") {
    allow = "GET";
    if (method == allow) return JsonAnswer(200, json{{"status", "ok"}});
  } else if (path == "/_mock/faults") {
    // {"rate_429": 0..1, "rate_5xx": 0..1}: random faults from now on (e.g. 1.0 = Uppzy is down).
    allow = "POST";
    if (method == allow) {
      json j = json::parse(body, nullptr, false);
      if (!j.is_object()) return ErrorAnswer(400, "body must be a JSON object");
      std::lock_guard<std::mutex> lock(mu_);
      fault_rate_429_ = std::clamp(j.value("rate_429", fault_rate_429_), 0.0, 1.0);
      fault_rate_5xx_ = std::clamp(j.value("rate_5xx", fault_rate_5xx_), 0.0, 1.0);
      return JsonAnswer(200, json{{"rate_429", fault_rate_429_}, {"rate_5xx", fault_rate_5xx_}});
    }
  } else if (path == "/_mock/reset") {
    allow = "POST";
    if (method == allow) {
      Reset();
      return JsonAnswer(200, json{{"status", "reset"}});
    }
  } else {
    return ErrorAnswer(404, "not found");
  }
  Answer a = ErrorAnswer(405, "method not allowed");
  a.allow = allow;
  return a;
}

std::string MockApi::StatsJson(SteadyTime now) const {
  json j;
  RequestLog::Completed completed;
  {
    std::lock_guard lock(mu_);
    j["requests_total"] = counters_.requests_total;
    j["unauthorized"] = counters_.unauthorized;
    j["submits"] = counters_.submits;
    j["polls"] = counters_.polls;
    j["feedbacks"] = counters_.feedbacks;
    j["closes"] = counters_.closes;
    j["duplicate_submissions"] = counters_.duplicate_submissions;
    json by_session = json::object();
    for (const auto& [session, n] : submits_by_session_) by_session[session] = n;
    j["submits_by_session"] = std::move(by_session);
    json by_request = json::object();
    uint64_t in_progress = 0;
    for (const auto& [id, r] : requests_) {
      if (r.feedbacks > 0) by_request[id] = r.feedbacks;
      if (StatusOf(r, now) == Status::kProcessing) ++in_progress;
    }
    j["feedback_by_request"] = std::move(by_request);
    json closes_by_session = json::object();
    for (const auto& [session, n] : closed_sessions_) closes_by_session[session] = n;
    j["closes_by_session"] = std::move(closes_by_session);
    j["in_progress"] = in_progress;
    j["requests_stored"] = requests_.size();
    completed = log_.CollectCompleted();
  }
  AnswerTimes answers = RequestLog::Summarize(std::move(completed));
  j["answers"] = json{
      {"records", answers.records},
      {"completed", answers.completed},
      {"ready_to_seen_p50_ms", answers.ready_to_seen_p50_ms},
      {"ready_to_seen_p95_ms", answers.ready_to_seen_p95_ms},
      {"ready_to_seen_max_ms", answers.ready_to_seen_max_ms},
      {"status_calls_per_completed", answers.status_calls_per_completed},
  };
  gate_.AddStats(now, &j);
  return Dump(j);
}

std::string MockApi::RequestsJson() const {
  std::vector<RequestRecord> records;
  {
    std::lock_guard lock(mu_);
    records = log_.Snapshot();
  }
  return RecordsJson(records);
}

void MockApi::Reset() {
  // Swap the tables out so that their memory is freed after the lock is released.
  decltype(requests_) requests;
  decltype(pairs_) pairs;
  decltype(submits_by_session_) by_session;
  decltype(feedback_script_pos_) feedback_pos;
  decltype(close_script_pos_) close_pos;
  decltype(closed_sessions_) closed;
  gate_.Reset();
  std::lock_guard lock(mu_);
  counters_ = Counters{};
  requests_.swap(requests);
  pairs_.swap(pairs);
  submits_by_session_.swap(by_session);
  feedback_script_pos_.swap(feedback_pos);
  close_script_pos_.swap(close_pos);
  closed_sessions_.swap(closed);
  log_.Clear();
}

}  // namespace uppzy::mock
