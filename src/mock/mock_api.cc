#include "mock/mock_api.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>
#include <utility>

#include "uppzy/json_text.h"

namespace uppzy::mock {
namespace {

using nlohmann::json;

constexpr std::string_view kApiPrefix = "/api/v1/";
constexpr std::string_view kSitesPrefix = "m2m/sites/";

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

// The {site} of an /api/v1 path below kApiPrefix (m2m/sites/{site}/...), or "" if it names none.
std::string_view SiteOf(std::string_view rest) {
  if (!rest.starts_with(kSitesPrefix)) return {};
  rest.remove_prefix(kSitesPrefix.size());
  return rest.substr(0, rest.find('/'));
}

// The endpoint of an /api/v1 path below kApiPrefix, or Route::kNone for an unknown path.
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

Answer JsonAnswer(unsigned status, const json& j) {
  Answer a;
  a.status = status;
  a.body = Dump(j);
  return a;
}

Answer ErrorAnswer(unsigned status, std::string_view error) {
  return JsonAnswer(status, json{{"error", error}});
}

MockApi::MockApi(const MockOptions& options, SteadyTime origin)
    : origin_(origin),
      ready_after_(options.ready_after_ms),
      gate_(options.sites, options.api_key, options.rate_limits, origin),
      fault_rate_429_(options.fault_rate_429),
      fault_rate_5xx_(options.fault_rate_5xx),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()),
      log_(options.request_log_capacity) {
  if (options.ready_dist) {
    // Its own generator, so that the n-th accepted request gets the same answer time whatever else
    // (faults, latencies) drew numbers before it.
    uint64_t seed = options.seed != 0 ? options.seed : std::random_device{}();
    ready_sampler_.emplace(*options.ready_dist, seed);
  }
}

Answer MockApi::Handle(const ApiRequest& req, SteadyTime now) {
  if (!req.path.starts_with(kApiPrefix)) {
    if (req.path.starts_with("/_mock/")) return Mock(req.method, req.path, req.body, now);
    return ErrorAnswer(404, "not found");
  }

  using Verdict = Admission::Verdict;
  const std::string_view rest = req.path.substr(kApiPrefix.size());
  const std::string_view site = SiteOf(rest);
  const Admission admission = gate_.Admit(site, req.api_key, now);
  const bool authorized =
      admission.verdict == Verdict::kAdmitted || admission.verdict == Verdict::kRateLimited;
  std::string_view request_id;
  Route route = authorized ? MatchRoute(rest, &request_id) : Route::kNone;
  const char* allow = route == Route::kPoll ? "GET" : "POST";
  bool method_ok = req.method == allow;
  {
    std::lock_guard lock(mu_);
    ++counters_.requests_total;
    if (admission.verdict == Verdict::kUnauthorized) ++counters_.unauthorized;
    if (method_ok) {
      if (route == Route::kSubmit) ++counters_.submits;
      if (route == Route::kPoll) ++counters_.polls;
      if (route == Route::kFeedback) ++counters_.feedbacks;
      if (route == Route::kClose) ++counters_.closes;
    }
  }

  Answer a;
  if (admission.verdict == Verdict::kUnauthorized) {
    a = ErrorAnswer(401, "invalid api key");
  } else if (admission.verdict == Verdict::kUnknownSite) {
    a = ErrorAnswer(404, "site not found");
  } else if (admission.verdict == Verdict::kRateLimited) {
    a = ErrorAnswer(429, "rate limit exceeded");
    a.retry_after_s = static_cast<int32_t>(std::min<int64_t>(admission.retry_after_s, INT32_MAX));
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
        a = Submit(site, req.body, now);
        break;
      case Route::kPoll:
        a = Poll(site, request_id, now);
        break;
      case Route::kFeedback:
        a = Feedback(site, req.body, now);
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

Answer MockApi::Submit(std::string_view site, std::string_view body, SteadyTime now) {
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
  r.site = site;
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
    if (!d->ready_ms && ready_sampler_) r.ready_at = now + std::chrono::milliseconds(ready_sampler_->Next());
    r.record = log_.Add(
        {.request_id = request_id, .site = r.site, .submitted_ms = MsOf(now), .ready_ms = MsOf(r.ready_at)});
    requests_.emplace(request_id, std::move(r));
    ++submits_by_session_[*session_id];
    if (++pair.accepted > 1) ++counters_.duplicate_submissions;
  }
  return JsonAnswer(202, json{{"session_id", *session_id}, {"request_id", request_id}, {"status", "queued"}});
}

Answer MockApi::Poll(std::string_view site, std::string_view request_id, SteadyTime now) {
  std::string session_id, detail;
  Status status;
  {
    std::lock_guard lock(mu_);
    auto it = requests_.find(std::string(request_id));
    if (it == requests_.end() || it->second.site != site) return ErrorAnswer(404, "request not found");
    Request& r = it->second;
    if (RequestRecord* record = log_.Find(r.record); record && record->status_calls < UINT32_MAX) {
      ++record->status_calls;
    }
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
    NoteStatusCallLocked(r, status, now);
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

Answer MockApi::Feedback(std::string_view site, std::string_view body, SteadyTime now) {
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
    if (it == requests_.end() || it->second.site != site || it->second.session_id != *session_id) {
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

void MockApi::NoteStatusCallLocked(const Request& r, Status status, SteadyTime now) {
  RequestRecord* record = log_.Find(r.record);
  if (record == nullptr || status == Status::kProcessing ||
      record->outcome != RequestRecord::Outcome::kNone) {
    return;
  }
  record->first_seen_ms = MsOf(now);
  record->outcome =
      status == Status::kCompleted ? RequestRecord::Outcome::kCompleted : RequestRecord::Outcome::kFailed;
  // A poll script that completed or failed the request ahead of its time made the answer ready now.
  if (r.forced != Forced::kNone) record->ready_ms = std::min(record->ready_ms, record->first_seen_ms);
}

int64_t MockApi::MsOf(SteadyTime t) const {
  if (t <= origin_) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t - origin_).count();
}

std::chrono::milliseconds MockApi::RandomDelay(int64_t max_ms) {
  if (max_ms <= 0) return std::chrono::milliseconds(0);
  std::lock_guard lock(mu_);
  return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, max_ms)(rng_));
}

}  // namespace uppzy::mock
