// The dashboard's input rules, pure and table-tested (tests/unit/dashboard_params_test.cc): the jobs
// filter and page cursor of GET /api/jobs (and of the "all that match" actions), ids in paths, and the
// start-up check of the listen address and token. Every function returns a value; none throws.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "uppzy/dashboard_store.h"

namespace uppzy::dashboard {

// A filter value by name ("state", "error_kind", ...); nullopt or "" when not given.
using ParamLookup = std::function<std::optional<std::string>(std::string_view name)>;

struct ParsedJobQuery {
  DashboardJobFilter filter;
  std::optional<DashboardJobCursor> after;
  int limit = 50;
  std::string error;  // non-empty: the request is bad; names the parameter and says what is accepted
};

inline constexpr int kDefaultJobsLimit = 50;
inline constexpr int kMaxJobsLimit = 500;

// Reads state, error_kind, job_key, session_id, since, until and, when `paging`, after and limit.
//   state       one of the seven job states
//   error_kind  one of the error kinds (job.h)
//   job_key, session_id   exact match, 1 to 255 characters
//   since, until          a time (see ParseTime); since < until when both are given
//   after       a cursor from a previous page's "next"
//   limit       1 .. 500 (default 50)
// `now_us` is the current time in microseconds since the Unix epoch (for durations such as "1h").
ParsedJobQuery ParseJobQuery(const ParamLookup& params, int64_t now_us, bool paging);

// A time for since/until: a duration back from now ("90s", "30m", "1h", "7d"), a date ("2024-05-01",
// midnight UTC) or an ISO 8601 date and time ("2024-05-01T12:00:00Z", "2024-05-01T14:00:00.5+02:00";
// without a zone it is UTC), read by ParseIsoDateOrTimestamp (uppzy/iso_time.h: years 1970 to 2200).
// Returns microseconds since the Unix epoch, nullopt when unreadable.
std::optional<int64_t> ParseTime(std::string_view text, int64_t now_us);

// The opaque cursor text of a page's "next" (URL-safe), and back. DecodeCursor returns nullopt for
// anything EncodeCursor did not produce.
std::string EncodeCursor(const DashboardJobCursor& c);
std::optional<DashboardJobCursor> DecodeCursor(std::string_view text);

// A positive id written in decimal without sign or leading zeros, at most 2^63 - 1.
std::optional<int64_t> ParseId(std::string_view text);

// The form body of an action (application/x-www-form-urlencoded, already decoded into fields): `ids`
// as a comma-separated list ("ids=1,2,3"), repeated ("ids=1&ids=2"), or both; no other field; 1 to
// `max_ids` ids, each as ParseId reads it. `error` names the field and says what is accepted.
struct ParsedFormIds {
  std::vector<int64_t> ids;
  std::string error;
};
ParsedFormIds ParseFormIds(const std::vector<std::pair<std::string, std::string>>& fields, size_t max_ids);

// Start-up rules for `uppzy-worker dashboard`: the address is host:port (port 0 .. 65535; port 0
// picks a free one); listening on anything but a loopback address needs a token; a token has at least
// 16 characters. Each problem names its setting (UPPZY_DASHBOARD_ADDR or --listen,
// UPPZY_DASHBOARD_TOKEN). Empty when the settings are usable.
std::vector<std::string> DashboardSettingsProblems(const std::string& addr, const std::string& token);

// Compares two secrets in time that depends only on their lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace uppzy::dashboard
