#include "dashboard/params.h"

#include <array>
#include <charconv>
#include <chrono>

#include "uppzy/config.h"
#include "uppzy/duration.h"
#include "uppzy/iso_time.h"
#include "uppzy/job.h"

namespace uppzy::dashboard {
namespace {

constexpr std::array<std::string_view, 7> kStateNames = {"queued",    "submitting", "polling",  "retrying",
                                                         "completed", "failed",     "cancelled"};

std::string JoinStates() {
  std::string s;
  for (auto n : kStateNames) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

std::string JoinErrorKinds() {
  std::string s;
  for (auto k :
       {ErrorKind::kRateLimited, ErrorKind::kServerError, ErrorKind::kNetwork, ErrorKind::kPollTimeout,
        ErrorKind::kUpstreamFailed, ErrorKind::kBadRequest, ErrorKind::kUnauthorized, ErrorKind::kForbidden,
        ErrorKind::kInvalidResponse, ErrorKind::kLeaseExpired, ErrorKind::kCancelled}) {
    s += (s.empty() ? "" : ", ") + std::string(ToString(k));
  }
  return s;
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Base64Url(std::string_view in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    const unsigned v =
        (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
  }
  return out;
}

std::optional<std::string> FromBase64Url(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = std::char_traits<char>::find(kB64, 64, c);
    if (p == nullptr) return std::nullopt;
    acc = (acc << 6) | static_cast<unsigned>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;  // stray bits: not our encoding
  return out;
}

std::optional<int64_t> ParseInt64(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

constexpr std::string_view kCursorPrefix = "v1:";

}  // namespace

std::optional<int64_t> ParseTime(std::string_view text, int64_t now_us) {
  if (text.empty() || text.size() > 64) return std::nullopt;
  if (auto d = ParseDuration(text)) return now_us - static_cast<int64_t>(d->count()) * 1000000LL;
  const auto t = ParseIsoDateOrTimestamp(text);
  if (!t) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
}

std::string EncodeCursor(const DashboardJobCursor& c) {
  return Base64Url(std::string(kCursorPrefix) + std::to_string(c.created_us) + ":" + std::to_string(c.id));
}

std::optional<DashboardJobCursor> DecodeCursor(std::string_view text) {
  if (text.empty() || text.size() > 100) return std::nullopt;
  auto raw = FromBase64Url(text);
  if (!raw || raw->rfind(kCursorPrefix, 0) != 0) return std::nullopt;
  const std::string_view body = std::string_view(*raw).substr(kCursorPrefix.size());
  const auto colon = body.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto created = ParseInt64(body.substr(0, colon));
  auto id = ParseId(body.substr(colon + 1));
  if (!created || *created < 0 || !id) return std::nullopt;
  return DashboardJobCursor{*created, *id};
}

std::optional<int64_t> ParseId(std::string_view text) {
  if (text.empty() || text.size() > 19 || text[0] == '0') return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return ParseInt64(text);
}

ParsedJobQuery ParseJobQuery(const ParamLookup& params, int64_t now_us, bool paging) {
  ParsedJobQuery q;
  auto get = [&](std::string_view name) { return params(name).value_or(""); };
  auto fail = [&](std::string msg) {
    q.error = std::move(msg);
    return q;
  };
  const std::string state = get("state");
  if (!state.empty()) {
    if (!ParseJobState(state)) return fail("state: unknown state; use one of " + JoinStates());
    q.filter.state = state;
  }
  const std::string kind = get("error_kind");
  if (!kind.empty()) {
    auto k = ParseErrorKind(kind);
    if (!k || *k == ErrorKind::kNone)
      return fail("error_kind: unknown error kind; use one of " + JoinErrorKinds());
    q.filter.error_kind = kind;
  }
  for (const char* name : {"job_key", "session_id"}) {
    const std::string v = get(name);
    if (v.size() > 255) return fail(std::string(name) + ": at most 255 characters");
    (std::string_view(name) == "job_key" ? q.filter.job_key : q.filter.session_id) = v;
  }
  for (const char* name : {"since", "until"}) {
    const std::string text = get(name);
    if (text.empty()) continue;
    std::optional<int64_t>& us = std::string_view(name) == "since" ? q.filter.since_us : q.filter.until_us;
    us = ParseTime(text, now_us);
    if (!us) {
      return fail(std::string(name) +
                  ": not a time; use a duration back from now (90s, 30m, 1h, 7d), a date (2024-05-01) or an "
                  "ISO 8601 time (2024-05-01T12:00:00Z), in the years 1970 to 2200");
    }
  }
  if (q.filter.since_us && q.filter.until_us && *q.filter.since_us >= *q.filter.until_us) {
    return fail("since: must be earlier than until");
  }
  if (!paging) return q;
  const std::string after = get("after");
  if (!after.empty()) {
    q.after = DecodeCursor(after);
    if (!q.after)
      return fail("after: not a cursor from this listing (use the \"next\" value of a previous page)");
  }
  const std::string limit = get("limit");
  if (!limit.empty()) {
    auto n = ParseId(limit);
    if (!n || *n > kMaxJobsLimit)
      return fail("limit: a whole number from 1 to " + std::to_string(kMaxJobsLimit));
    q.limit = static_cast<int>(*n);
  }
  return q;
}

std::vector<std::string> DashboardSettingsProblems(const std::string& addr, const std::string& token) {
  std::vector<std::string> problems;
  const auto colon = addr.rfind(':');
  std::string host = colon == std::string::npos ? std::string() : addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = colon == std::string::npos ? std::string() : addr.substr(colon + 1);
  int port_number = -1;
  if (!port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos) {
    port_number = std::stoi(port);
  }
  if (host.empty() || port_number < 0 || port_number > 65535) {
    problems.push_back("UPPZY_DASHBOARD_ADDR (--listen): '" + addr +
                       "' is not host:port (e.g. 127.0.0.1:8080; port 0 picks a free one)");
  } else if (!IsLoopbackHost(host) && token.empty()) {
    problems.push_back("UPPZY_DASHBOARD_TOKEN: required to listen on " + host +
                       ", which is not a loopback address (the dashboard can retry and cancel jobs); set "
                       "UPPZY_DASHBOARD_TOKEN or listen on 127.0.0.1");
  }
  if (!token.empty() && token.size() < 16) {
    problems.push_back("UPPZY_DASHBOARD_TOKEN: at least 16 characters (e.g. openssl rand -hex 24)");
  }
  return problems;
}

ParsedFormIds ParseFormIds(const std::vector<std::pair<std::string, std::string>>& fields, size_t max_ids) {
  ParsedFormIds r;
  const std::string expected = "ids: a list of 1 to " + std::to_string(max_ids) +
                               " job ids (positive whole numbers), as ids=1,2,3 or ids=1&ids=2";
  for (const auto& [name, value] : fields) {
    if (name != "ids") {
      r.error = "unknown field '" + name.substr(0, 64) + "'; give ids (ids=1,2,3)";
      return r;
    }
    size_t pos = 0;
    while (pos <= value.size()) {
      size_t end = value.find(',', pos);
      if (end == std::string::npos) end = value.size();
      const auto id = ParseId(std::string_view(value).substr(pos, end - pos));
      if (!id || r.ids.size() >= max_ids) {
        r.ids.clear();
        r.error = expected;
        return r;
      }
      r.ids.push_back(*id);
      pos = end + 1;
    }
  }
  if (r.ids.empty()) r.error = expected;
  return r;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = a.size();
  for (size_t i = 0; i < n; ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace uppzy::dashboard
