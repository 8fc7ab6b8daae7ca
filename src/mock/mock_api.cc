#include "mock/mock_api.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

namespace uppzy::mock {
namespace {

using nlohmann::json;

constexpr std::string_view kApiPrefix = "/api/v1/";

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Answer JsonAnswer(unsigned status, const json& j) {
  Answer a;
  a.status = status;
  a.body = Dump(j);
  return a;
}

Answer ErrorAnswer(unsigned status, std::string_view error) {
  return JsonAnswer(status, json{{"error", error}});
}

enum class Route { kNone, kSubmit, kPoll, kFeedback, kClose };

// True for the steps that replace the normal answer (as opposed to ok/processing/completed/failed).
bool IsTransportStep(const ScriptStep& step) {
  using Kind = ScriptStep::Kind;
  return step.kind == Kind::kStatus || step.kind == Kind::kHang || step.kind == Kind::kReset ||
         step.kind == Kind::kGarbage || step.kind == Kind::kHuge || step.kind == Kind::kNul ||
         step.kind == Kind::kDotDot;
}

// The hostile 2xx of a `nul` or `dotdot` step, per endpoint (see mock_script.h).
Answer HostileAnswer(const ScriptStep& step, Route route) {
  const std::string nul(1, '\0');
  if (step.kind == ScriptStep::Kind::kDotDot) {
    return JsonAnswer(202, json{{"request_id", ".."}, {"status", "queued"}});
  }
  switch (route) {
    case Route::kSubmit:
      return JsonAnswer(202, json{{"request_id", "req" + nul + "x"}, {"status", "queued"}});
    case Route::kPoll:
      return JsonAnswer(200, json{{"status", "completed"},
                                  {"answer", "mock answer" + nul + " with NUL"},
                                  {"note" + nul, "value" + nul}});
    case Route::kFeedback:
      return JsonAnswer(
          200,
          json{{"status", "ok"}, {"feedback_submitted_at", "0000-01-01T00:00:00Z"}, {"note", "value" + nul}});
    case Route::kClose:
    case Route::kNone:
      break;
  }
  return JsonAnswer(200, json{{"status", "closed"}, {"note", "value" + nul}});
}

// The answer of a transport step on `route`. Requires IsTransportStep(step).
Answer StepAnswer(const ScriptStep& step, Route route) {
  using Kind = ScriptStep::Kind;
  Answer a;
  switch (step.kind) {
    case Kind::kNul:
    case Kind::kDotDot:
      return HostileAnswer(step, route);
    case Kind::kHang:
      a.kind = Answer::Kind::kHang;
      return a;
    case Kind::kReset:
      a.kind = Answer::Kind::kReset;
      return a;
    case Kind::kGarbage:
      a.kind = Answer::Kind::kGarbage;
      return a;
    case Kind::kHuge:
      a.kind = Answer::Kind::kHuge;
      return a;
    default:
      break;
  }
  a = ErrorAnswer(step.status, step.nul_error ? std::string("mock error") + '\0' + " with NUL"
                                              : "mock scripted status " + std::to_string(step.status));
  a.retry_after_s = step.retry_after_s;
  return a;
}

// The body as a JSON object, or std::nullopt.
std::optional<json> ParseObject(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

// The member `key` if it is a non-empty string, else nullptr.
const std::string* RequiredString(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return nullptr;
  const std::string& s = it->get_ref<const std::string&>();
  return s.empty() ? nullptr : &s;
}

std::string MissingField(const char* key) { return std::string(key) + " must be a non-empty string"; }

std::string IsoUtcNow() {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

// The parts of an /api/v1 path, or an empty result for an unknown path.

Route MatchRoute(std::string_view rest, std::string_view* request_id) {
  std::string_view segs[7];
  size_t n = 0;
  while (true) {
    size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    if (seg.empty() || n == std::size(segs)) return Route::kNone;
    segs[n++] = seg;
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (n < 5 || segs[0] != "m2m" || segs[1] != "sites" || segs[3] != "chat") return Route::kNone;
  if (n == 5 && segs[4] == "async") return Route::kSubmit;
  if (n == 5 && segs[4] == "feedback") return Route::kFeedback;
  if (n == 6 && segs[4] == "session" && segs[5] == "close") return Route::kClose;
  if (n == 6 && segs[4] == "requests") {
    *request_id = segs[5];
    return Route::kPoll;
  }
  return Route::kNone;
}

}  // namespace

MockApi::MockApi(const MockOptions& options)
    : api_key_(options.api_key),
      ready_after_(options.ready_after_ms),
      fault_rate_429_(options.fault_rate_429),
      fault_rate_5xx_(options.fault_rate_5xx),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()) {}

Answer MockApi::Handle(const ApiRequest& req, SteadyTime now) {
  if (!req.path.starts_with(kApiPrefix)) {
    if (req.path.starts_with("/_mock/")) return Mock(req.method, req.path, req.body, now);
    return ErrorAnswer(404, "not found");
  }

  bool authorized = req.api_key.has_value() && *req.api_key == api_key_;
  std::string_view request_id;
  Route route = authorized ? MatchRoute(req.path.substr(kApiPrefix.size()), &request_id) : Route::kNone;
  const char* allow = route == Route::kPoll ? "GET" : "POST";
  bool method_ok = req.method == allow;
  {
    std::lock_guard lock(mu_);
    ++counters_.requests_total;
    if (!authorized) ++counters_.unauthorized;
    if (method_ok) {
      if (route == Route::kSubmit) ++counters_.submits;
      if (route == Route::kPoll) ++counters_.polls;
      if (route == Route::kFeedback) ++counters_.feedbacks;
      if (route == Route::kClose) ++counters_.closes;
    }
  }

  Answer a;
  if (!authorized) {
    a = ErrorAnswer(401, "invalid api key");
  } else if (route == Route::kNone) {
    a = ErrorAnswer(404, "not found");
  } else if (!method_ok) {
    a = ErrorAnswer(405, "method not allowed");
    a.allow = allow;
  } else if (req.body_too_large) {
    a = ErrorAnswer(413, "body too large");
  } else {
    switch (route) {
      case Route::kSubmit:
        a = Submit(req.body, now);
        break;
      case Route::kPoll:
        a = Poll(request_id, now);
        break;
      case Route::kFeedback:
        a = Feedback(req.body, now);
        break;
      case Route::kClose:
        a = Close(req.body);
        break;
      case Route::kNone:
        break;
    }
  }
  a.delayable = true;
  return a;
}

Answer MockApi::Submit(std::string_view body, SteadyTime now) {
  std::optional<json> j = ParseObject(body);
  if (!j) return ErrorAnswer(400, "body must be a JSON object");
  const std::string* session_id = RequiredString(*j, "session_id");
  if (!session_id) return ErrorAnswer(400, MissingField("session_id"));
  const std::string* message = RequiredString(*j, "message");
  if (!message) return ErrorAnswer(400, MissingField("message"));
  auto lang = j->find("response_language");
  if (lang != j->end() && !lang->is_string()) return ErrorAnswer(400, "response_language must be a string");
  std::string error;
  std::optional<Directives> d = ParseDirectives(*message, &error);
  if (!d) return ErrorAnswer(400, error);

  // Build everything that needs no state before taking the lock.
  Request r;
  r.session_id = *session_id;
  r.message = *message;
  r.ready_at = now + (d->ready_ms ? std::chrono::milliseconds(*d->ready_ms) : ready_after_);
  if (d->fail) r.fail = std::move(*d->fail);
  if (d->poll) r.poll_script = std::make_unique<Script>(std::move(*d->poll));
  std::string pair_key = *session_id;
  pair_key.push_back('\0');
  pair_key += *message;

  std::string request_id = "req_";
  {
    std::lock_guard lock(mu_);
    Pair& pair = pairs_[std::move(pair_key)];
    uint64_t attempt = pair.attempts++;
    if (d->submit) {
      ScriptStep step = StepThenOk(*d->submit, attempt);
      if (IsTransportStep(step)) return StepAnswer(step, Route::kSubmit);
    } else if (std::optional<Answer> fault = RandomFaultLocked()) {
      return std::move(*fault);
    }
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%llu_%012llx", static_cast<unsigned long long>(next_request_++),
                  static_cast<unsigned long long>(rng_() & 0xffffffffffffull));
    request_id += suffix;
    requests_.emplace(request_id, std::move(r));
    ++submits_by_session_[*session_id];
    if (++pair.accepted > 1) ++counters_.duplicate_submissions;
  }
  return JsonAnswer(202, json{{"session_id", *session_id}, {"request_id", request_id}, {"status", "queued"}});
}

Answer MockApi::Poll(std::string_view request_id, SteadyTime now) {
  std::string session_id, detail;
  Status status;
  {
    std::lock_guard lock(mu_);
    auto it = requests_.find(std::string(request_id));
    if (it == requests_.end()) return ErrorAnswer(404, "request not found");
    Request& r = it->second;
    if (r.poll_script) {
      ScriptStep step = StepThenLast(*r.poll_script, r.polls);
      if (r.polls < UINT32_MAX) ++r.polls;
      if (IsTransportStep(step)) return StepAnswer(step, Route::kPoll);
      if (step.kind == ScriptStep::Kind::kCompleted) r.forced = Forced::kCompleted;
      if (step.kind == ScriptStep::Kind::kFailed) r.forced = Forced::kFailed;
      status = step.kind == ScriptStep::Kind::kProcessing ? Status::kProcessing : StatusOf(r, now);
    } else if (std::optional<Answer> fault = RandomFaultLocked()) {
      return std::move(*fault);
    } else {
      status = StatusOf(r, now);
    }
    session_id = r.session_id;
    if (status == Status::kCompleted) detail = "echo: " + r.message;
    if (status == Status::kFailed) detail = r.fail.empty() ? "mock failure" : r.fail;
  }

  json j{{"session_id", std::move(session_id)}, {"request_id", request_id}};
  switch (status) {
    case Status::kProcessing:
      j["status"] = "processing";
      break;
    case Status::kCompleted:
      j["status"] = "completed";
      j["answer"] = std::move(detail);
      j["confidence_level"] = "high";
      j["confidence_score"] = 0.93;
      break;
    case Status::kFailed:
      j["status"] = "failed";
      j["error"] = std::move(detail);
      break;
  }
  return JsonAnswer(200, j);
}

Answer MockApi::Feedback(std::string_view body, SteadyTime now) {
  std::optional<json> j = ParseObject(body);
  if (!j) return ErrorAnswer(400, "body must be a JSON object");
  const std::string* session_id = RequiredString(*j, "session_id");
  if (!session_id) return ErrorAnswer(400, MissingField("session_id"));
  const std::string* request_id = RequiredString(*j, "request_id");
  if (!request_id) return ErrorAnswer(400, MissingField("request_id"));
  const std::string* rating = RequiredString(*j, "feedback");
  if (!rating || (*rating != "good" && *rating != "bad")) {
    return ErrorAnswer(400, "feedback must be \"good\" or \"bad\"");
  }
  std::string error;
  std::optional<Directives> d = ParseDirectives(*session_id, &error);
  if (!d) return ErrorAnswer(400, error);

  bool first;
  {
    std::lock_guard lock(mu_);
    if (d->feedback) {
      ScriptStep step = StepThenOk(*d->feedback, feedback_script_pos_[*session_id]++);
      if (IsTransportStep(step)) return StepAnswer(step, Route::kFeedback);
    } else if (std::optional<Answer> fault = RandomFaultLocked()) {
      return std::move(*fault);
    }
    auto it = requests_.find(*request_id);
    if (it == requests_.end() || it->second.session_id != *session_id) {
      return ErrorAnswer(404, "request not found");
    }
    Request& r = it->second;
    if (StatusOf(r, now) != Status::kCompleted) return ErrorAnswer(409, "request not completed");
    first = r.feedbacks == 0;
    ++r.feedbacks;
  }
  json out{{"status", "ok"}, {"request_id", *request_id}, {"feedback", *rating}};
  if (first) out["feedback_submitted_at"] = IsoUtcNow();
  return JsonAnswer(200, out);
}

Answer MockApi::Close(std::string_view body) {
  std::optional<json> j = ParseObject(body);
  if (!j) return ErrorAnswer(400, "body must be a JSON object");
  const std::string* session_id = RequiredString(*j, "session_id");
  if (!session_id) return ErrorAnswer(400, MissingField("session_id"));
  std::string error;
  std::optional<Directives> d = ParseDirectives(*session_id, &error);
  if (!d) return ErrorAnswer(400, error);

  bool already;
  {
    std::lock_guard lock(mu_);
    if (d->close) {
      ScriptStep step = StepThenOk(*d->close, close_script_pos_[*session_id]++);
      if (IsTransportStep(step)) return StepAnswer(step, Route::kClose);
    } else if (std::optional<Answer> fault = RandomFaultLocked()) {
      return std::move(*fault);
    }
    already = closed_sessions_[*session_id]++ > 0;
  }
  json out{{"status", "closed"}, {"session_id", *session_id}};
  if (already) out["already_closed"] = true;
  return JsonAnswer(200, out);
}

Answer MockApi::Mock(std::string_view method, std::string_view path, std::string_view body, SteadyTime now) {
  const char* allow = nullptr;
  if (path == "/_mock/stats") {
    allow = "GET";
    if (method == allow) {
      Answer a;
      a.body = StatsJson(now);
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

std::optional<Answer> MockApi::RandomFaultLocked() {
  if (fault_rate_429_ <= 0.0 && fault_rate_5xx_ <= 0.0) return std::nullopt;
  double r = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  if (r < fault_rate_429_) return ErrorAnswer(429, "rate limited (mock fault)");
  if (r < fault_rate_429_ + fault_rate_5xx_) return ErrorAnswer(503, "service unavailable (mock fault)");
  return std::nullopt;
}

MockApi::Status MockApi::StatusOf(const Request& r, SteadyTime now) {
  if (r.forced == Forced::kCompleted) return Status::kCompleted;
  if (r.forced == Forced::kFailed) return Status::kFailed;
  if (now < r.ready_at) return Status::kProcessing;
  return r.fail.empty() ? Status::kCompleted : Status::kFailed;
}

std::string MockApi::StatsJson(SteadyTime now) const {
  json j;
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
  }
  return Dump(j);
}

void MockApi::Reset() {
  // Swap the tables out so that their memory is freed after the lock is released.
  decltype(requests_) requests;
  decltype(pairs_) pairs;
  decltype(submits_by_session_) by_session;
  decltype(feedback_script_pos_) feedback_pos;
  decltype(close_script_pos_) close_pos;
  decltype(closed_sessions_) closed;
  std::lock_guard lock(mu_);
  counters_ = Counters{};
  requests_.swap(requests);
  pairs_.swap(pairs);
  submits_by_session_.swap(by_session);
  feedback_script_pos_.swap(feedback_pos);
  close_script_pos_.swap(close_pos);
  closed_sessions_.swap(closed);
}

std::chrono::milliseconds MockApi::RandomDelay(int64_t max_ms) {
  if (max_ms <= 0) return std::chrono::milliseconds(0);
  std::lock_guard lock(mu_);
  return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, max_ms)(rng_));
}

}  // namespace uppzy::mock
