// ParseExchange: what one finished HTTP exchange with Uppzy meant. Pure: no I/O, `now` is a parameter.
#include <curl/curl.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "uppzy/delivery_policy.h"
#include "uppzy/parse_exchange.h"

namespace uppzy {
namespace {

using nlohmann::json;

// Every text we keep (error details, an in-progress status) is cut to this many bytes.
constexpr size_t kMaxTextBytes = 300;
// A body nested deeper than this is refused before parsing: bounded stack whatever the server sends.
constexpr int kMaxJsonDepth = 64;
// Retry-After seconds beyond this are clamped (about 31 years; keeps the millisecond count in range).
constexpr long long kMaxRetryAfterSeconds = 1'000'000'000;
// Keys shorter than this are not redacted from texts: they would match ordinary words.
constexpr size_t kMinRedactedSecret = 8;

// Cuts `s` to kMaxTextBytes without splitting a UTF-8 sequence (the text may end up in a database).
std::string Clip(std::string s) {
  if (s.size() <= kMaxTextBytes) return s;
  size_t n = kMaxTextBytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

// Bytes of UTF-8 lead byte `c`'s sequence, or 0 when `c` cannot start one.
int SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not one (overlongs,
// surrogates and code points above U+10FFFF included).
size_t ValidSequenceAt(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const int n = SequenceLength(b(i));
  if (n == 0 || i + n > s.size()) return 0;
  for (int k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  }
  if (n == 3 && b(i) == 0xE0 && b(i + 1) < 0xA0) return 0;  // overlong
  if (n == 3 && b(i) == 0xED && b(i + 1) > 0x9F) return 0;  // UTF-16 surrogate
  if (n == 4 && b(i) == 0xF0 && b(i + 1) < 0x90) return 0;  // overlong
  if (n == 4 && b(i) == 0xF4 && b(i + 1) > 0x8F) return 0;  // above U+10FFFF
  return static_cast<size_t>(n);
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kRedacted = "[redacted]";

// Rewrites `s` so that it can be stored and logged: NUL and invalid UTF-8 bytes become U+FFFD (the
// documented rule: PostgreSQL refuses NUL in text and jsonb), and the worker's own API key becomes
// [redacted] (an upstream that echoes the key must not get it stored).
std::string SafeText(std::string_view s, std::string_view secret) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\0') {
      out += kReplacement;
      ++i;
      continue;
    }
    const size_t n = ValidSequenceAt(s, i);
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  if (secret.size() >= kMinRedactedSecret) {
    for (size_t pos = out.find(secret); pos != std::string::npos; pos = out.find(secret, pos)) {
      out.replace(pos, secret.size(), kRedacted);
      pos += kRedacted.size();
    }
  }
  return out;
}

// The same for every string (keys too) inside a parsed JSON value.
json SafeJson(const json& v, std::string_view secret) {
  if (v.is_string()) return SafeText(v.get_ref<const std::string&>(), secret);
  if (v.is_array()) {
    json out = json::array();
    for (const auto& e : v) out.push_back(SafeJson(e, secret));
    return out;
  }
  if (v.is_object()) {
    json out = json::object();
    for (const auto& [k, e] : v.items()) out[SafeText(k, secret)] = SafeJson(e, secret);
    return out;
  }
  return v;
}

// A request_id we are willing to put in a URL and a row: the rules are documented with ParseExchange in
// parse_exchange.h.
std::string RequestIdProblemOf(std::string_view id) {
  if (id.empty()) return "submit response has no request_id";
  if (id.size() > kMaxRequestIdBytes) {
    return "request_id longer than " + std::to_string(kMaxRequestIdBytes) + " bytes";
  }
  if (id == "." || id == "..") return "request_id is a dot segment";
  for (char c : id) {
    if (c < 0x21 || c > 0x7E) return "request_id has a byte that is not printable ASCII";
  }
  return {};
}

// True when no array/object in `body` nests deeper than `max_depth` (strings are skipped).
bool NestingWithin(const std::string& body, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// The body as a JSON object, or nullopt when it is not one.
std::optional<json> ParseObject(const std::string& body) {
  if (!NestingWithin(body, kMaxJsonDepth)) return std::nullopt;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

std::optional<std::string> StringField(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

bool IsBlank(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Retry-After as delay-seconds ("7") or an HTTP-date (a past date means 0); nullopt when unreadable.
std::optional<Millis> ParseRetryAfter(const std::string& raw, long long now_unix_seconds) {
  std::string v = Trim(raw);
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    long long seconds = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), seconds);
    if (ec == std::errc::result_out_of_range || seconds > kMaxRetryAfterSeconds) {
      seconds = kMaxRetryAfterSeconds;
    } else if (ec != std::errc() || ptr != v.data() + v.size()) {
      return std::nullopt;
    }
    return Millis(seconds * 1000);
  }
  // IMF-fixdate, RFC 850 and asctime forms; curl_getdate is a pure parser.
  time_t at = curl_getdate(v.c_str(), nullptr);
  if (at == -1) return std::nullopt;
  long long delta = static_cast<long long>(at) - now_unix_seconds;
  delta = std::clamp(delta, 0LL, kMaxRetryAfterSeconds);
  return Millis(delta * 1000);
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = ValidSequenceAt(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

Outcome ParseSuccess(RequestKind kind, int status, const std::string& body, std::string_view secret) {
  auto invalid = [status](std::string why) {
    return Outcome::Of(OutcomeKind::kInvalidResponse, status, why);
  };
  if (!IsValidUtf8(body)) return invalid("HTTP " + std::to_string(status) + ": body is not valid UTF-8");

  if (kind == RequestKind::kFeedback || kind == RequestKind::kSessionClose) {
    // An empty 2xx (e.g. 204) is delivered; a body, when present, must be a JSON object.
    Outcome o = Outcome::Of(OutcomeKind::kDelivered, status);
    if (IsBlank(body)) return o;
    std::optional<json> j = ParseObject(body);
    if (!j) return invalid("HTTP " + std::to_string(status) + ": body is not a JSON object");
    if (kind == RequestKind::kFeedback) {
      std::string at = Clip(SafeText(StringField(*j, "feedback_submitted_at").value_or(""), secret));
      // A time we cannot hold (or that no server meant) is refused, not stored as another date.
      if (!at.empty() && !ParseIsoTimestamp(at)) {
        return invalid("feedback_submitted_at is not an ISO 8601 time between 1970 and 2200");
      }
      o.feedback_submitted_at = std::move(at);
    }
    return o;
  }

  std::optional<json> j = ParseObject(body);
  if (!j) return invalid("HTTP " + std::to_string(status) + ": body is not a JSON object");

  if (kind == RequestKind::kSubmit) {
    std::optional<std::string> request_id = StringField(*j, "request_id");
    if (!request_id) return invalid("submit response has no request_id");
    if (std::string problem = RequestIdProblemOf(*request_id); !problem.empty()) return invalid(problem);
    return Outcome::Accepted(std::move(*request_id), status);
  }

  // kStatus
  std::optional<std::string> state = StringField(*j, "status");
  if (!state) return invalid("status response has no status");
  Outcome o;
  if (*state == "completed") {
    std::optional<std::string> answer = StringField(*j, "answer");
    if (!answer) return invalid("completed status has no answer");
    json rest = *j;
    for (const char* key : {"answer", "status", "request_id", "session_id"}) rest.erase(key);
    o = Outcome::Status("completed", SafeText(*answer, secret));
    o.result_json = SafeJson(rest, secret).dump(-1, ' ', false, json::error_handler_t::replace);
  } else if (*state == "failed") {
    o = Outcome::Status("failed", {}, Clip(SafeText(StringField(*j, "error").value_or(""), secret)));
  } else {
    o = Outcome::Status(Clip(SafeText(*state, secret)));
  }
  o.http_status = status;
  o.request_id = Clip(SafeText(StringField(*j, "request_id").value_or(""), secret));
  return o;
}

OutcomeKind KindOfFailureStatus(int status) {
  if (status == 401) return OutcomeKind::kUnauthorized;
  if (status == 403) return OutcomeKind::kForbidden;
  if (status == 429) return OutcomeKind::kRateLimited;
  if (status >= 500 && status <= 599) return OutcomeKind::kServerError;
  if (status >= 400 && status <= 499) return OutcomeKind::kBadRequest;
  return OutcomeKind::kInvalidResponse;  // 1xx, 3xx, or out of range
}

}  // namespace

std::string_view ToString(RequestKind k) {
  switch (k) {
    case RequestKind::kSubmit:
      return "submit";
    case RequestKind::kStatus:
      return "status";
    case RequestKind::kFeedback:
      return "feedback";
    case RequestKind::kSessionClose:
      return "session_close";
  }
  return "unknown";
}

Outcome ParseExchange(RequestKind kind, bool curl_ok, const std::string& curl_error, long http_status,
                      const std::string& body, bool truncated, const std::string& retry_after,
                      long long now_unix_seconds) {
  return ParseExchange(kind, curl_ok, curl_error, http_status, body, truncated, retry_after, now_unix_seconds,
                       /*max_response_bytes=*/0, /*secret=*/{});
}

Outcome ParseExchange(RequestKind kind, bool curl_ok, const std::string& curl_error, long http_status,
                      const std::string& body, bool truncated, const std::string& retry_after,
                      long long now_unix_seconds, long max_response_bytes, std::string_view secret) {
  const int status = http_status > 0 && http_status < 1000 ? static_cast<int>(http_status) : 0;
  if (truncated) {
    std::string why = max_response_bytes > 0
                          ? "response larger than " + std::to_string(max_response_bytes) + " bytes"
                          : "response larger than the limit";
    return Outcome::Of(OutcomeKind::kInvalidResponse, status, why);
  }
  if (!curl_ok || status == 0) {
    std::string why = curl_error.empty() ? "no HTTP response" : curl_error;
    return Outcome::Of(OutcomeKind::kNetwork, status, Clip(SafeText(why, secret)));
  }
  if (status >= 200 && status <= 299) {
    Outcome o = ParseSuccess(kind, status, body, secret);
    // A server may pace polls of a request still in progress (honoured within the poll bounds).
    if (o.kind == OutcomeKind::kStatus && !retry_after.empty()) {
      o.retry_after = ParseRetryAfter(retry_after, now_unix_seconds);
    }
    return o;
  }

  std::string why = "HTTP " + std::to_string(status);
  if (std::optional<json> j = ParseObject(body)) {
    if (std::optional<std::string> server_error = StringField(*j, "error");
        server_error && !server_error->empty()) {
      why += ": " + SafeText(*server_error, secret);
    }
  }
  Outcome o = Outcome::Of(KindOfFailureStatus(status), status, Clip(std::move(why)));
  if (o.kind == OutcomeKind::kRateLimited) o.retry_after = ParseRetryAfter(retry_after, now_unix_seconds);
  return o;
}

}  // namespace uppzy
