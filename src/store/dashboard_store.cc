#include "uppzy/dashboard_store.h"

#include <cctype>
#include <cstdio>
#include <pqxx/pqxx>

#include "store/queries_dashboard.h"
#include "store/sql_values.h"
#include "store/translate.h"

namespace uppzy {
namespace {

using store::IdArray;
using store::Iso;
using store::Real;
using store::Text;
using store::Translate;

long long Count(const pqxx::field& f) { return f.is_null() ? 0 : f.as<long long>(); }

// timestamptz text in a UTC, ISO session -> ISO 8601 with milliseconds (see dashboard_store.h):
//   "2024-05-01 12:00:03.123456+00"      -> "2024-05-01T12:00:03.123Z"
//   "0044-03-15 12:00:00+00 BC"          -> "-000043-03-15T12:00:00.000Z" (astronomical years)
//   "294276-12-31 23:59:59.999999+00"    -> "+294276-12-31T23:59:59.999Z"
//   "infinity", "-infinity"              -> unchanged
// Anything else comes back as PostgreSQL wrote it.
std::string Iso(const pqxx::field& f) {
  if (f.is_null()) return {};
  std::string s = f.as<std::string>();
  const bool bc = s.size() > 3 && s.compare(s.size() - 3, 3, " BC") == 0;
  if (bc) s.resize(s.size() - 3);
  // The year is every digit before the first '-'; then "-MM-DD HH:MM:SS".
  const size_t dash = s.find('-');
  if (dash == std::string::npos || dash < 4 || dash > 6 || s.size() < dash + 15 || s[dash + 6] != ' ') {
    return f.as<std::string>();
  }
  long long year = 0;
  for (size_t i = 0; i < dash; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return f.as<std::string>();
    year = year * 10 + (s[i] - '0');
  }
  if (bc) year = 1 - year;  // 1 BC is year 0, 2 BC is year -1
  char y[32];               // room for any long long, so no compiler sees a truncation
  if (year >= 0 && year <= 9999) {
    std::snprintf(y, sizeof y, "%04lld", year);
  } else {
    std::snprintf(y, sizeof y, "%c%06lld", year < 0 ? '-' : '+', year < 0 ? -year : year);
  }
  const size_t time = dash + 7;  // "HH:MM:SS"
  std::string millis = "000";
  if (s.size() > time + 8 && s[time + 8] == '.') {
    for (size_t i = 0;
         i < 3 && time + 9 + i < s.size() && std::isdigit(static_cast<unsigned char>(s[time + 9 + i])); ++i) {
      millis[i] = s[time + 9 + i];
    }
  }
  return std::string(y) + s.substr(dash, 6) + "T" + s.substr(time, 8) + "." + millis + "Z";
}

// Microseconds since the epoch -> "1970-01-01 00:00:00.000000+00", exact (PostgreSQL reads it as a
// timestamptz without rounding).
std::string PgTimestamp(int64_t us) {
  int64_t secs = us / 1000000;
  int64_t frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  int64_t days = secs / 86400;
  int64_t rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02lld-%02lld %02lld:%02lld:%02lld.%06lld+00",
                static_cast<long long>(y), static_cast<long long>(m), static_cast<long long>(d),
                static_cast<long long>(rem / 3600), static_cast<long long>(rem % 3600 / 60),
                static_cast<long long>(rem % 60), static_cast<long long>(frac));
  return buf;
}

// Appends the WHERE fragments of `f` to `sql`, and their values to `params` (the state only when
// `with_state`: the listing's branches name it themselves).
void AppendFilter(const DashboardJobFilter& f, std::string* sql, std::vector<std::string>* params,
                  bool with_state = true) {
  auto add = [&](const char* fragment, std::string value, const char* cast = "") {
    params->push_back(std::move(value));
    *sql += fragment + std::to_string(params->size()) + cast;
  };
  if (with_state && !f.state.empty()) add(store::sql::kDashFilterState, f.state);
  if (!f.error_kind.empty()) add(store::sql::kDashFilterErrorKind, f.error_kind);
  if (!f.job_key.empty()) add(store::sql::kDashFilterJobKey, f.job_key);
  if (!f.session_id.empty()) add(store::sql::kDashFilterSessionId, f.session_id);
  if (f.since_us) add(store::sql::kDashFilterSince, PgTimestamp(*f.since_us), "::timestamptz");
  if (f.until_us) add(store::sql::kDashFilterUntil, PgTimestamp(*f.until_us), "::timestamptz");
}

int FirstInt(const pqxx::result& r) { return r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<int>(); }

}  // namespace

struct DashboardStore::Impl {
  explicit Impl(const std::string& url) : conn(url) {
    pqxx::nontransaction(conn).exec(store::sql::kDashSession);
  }
  pqxx::connection conn;
};

DashboardStore::DashboardStore(const std::string& database_url) {
  Translate([&] {
    impl_ = std::make_unique<Impl>(database_url);
    return 0;
  });
}

DashboardStore::~DashboardStore() = default;

DashboardOverview DashboardStore::OverviewRead(bool full) {
  return Translate([&] {
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(impl_->conn);
    DashboardOverview o;
    {
      auto r = tx.exec(store::sql::kDashOverviewClock);
      o.now = Iso(r[0][0]);
      o.minutes_start = Iso(r[0][1]);
    }
    for (const auto& row :
         tx.exec(full ? store::sql::kDashOverviewStates : store::sql::kDashOverviewStatesUnfinished)) {
      o.states.push_back(StateCount{Text(row[0]), Count(row[1]), Real(row[2])});
    }
    for (const auto& row : full ? tx.exec(store::sql::kDashOverviewHealth) : pqxx::result()) {
      HealthWindow h;
      h.period = Text(row[0]);
      h.finished = Count(row[1]);
      h.completed = Count(row[2]);
      h.failed = Count(row[3]);
      h.cancelled = Count(row[4]);
      h.poll_timeouts = Count(row[5]);
      h.timeout_rate = Real(row[6]);
      h.retried = Count(row[7]);
      h.retry_rate = Real(row[8]);
      h.p50_seconds = Real(row[9]);
      h.p95_seconds = Real(row[10]);
      h.failures_by_kind_json = row[11].is_null() ? "{}" : Text(row[11]);
      o.health.push_back(std::move(h));
    }
    for (const auto& row : full ? tx.exec(store::sql::kDashOverviewMinutes) : pqxx::result()) {
      o.minutes.push_back(
          DashboardMinute{row[0].as<int>(), Count(row[1]), Count(row[2]), Count(row[3]), Count(row[4])});
    }
    for (const auto& row : tx.exec(store::sql::kDashOverviewIncidents)) {
      DashboardIncident i;
      i.id = row[0].as<int64_t>();
      i.kind = Text(row[1]);
      i.http_status = row[2].is_null() ? 0 : row[2].as<int>();
      i.detail = Text(row[3]);
      i.site_id = Text(row[4]);
      i.api_key_fingerprint = Text(row[5]);
      i.opened_by = Text(row[6]);
      i.opened_at = Iso(row[7]);
      i.resolved_at = Iso(row[8]);
      o.open_incidents.push_back(std::move(i));
    }
    for (const auto& row : tx.exec(store::sql::kDashOverviewWorkers)) {
      DashboardWorker w;
      w.id = Text(row[0]);
      w.host = Text(row[1]);
      w.pid = row[2].as<int>();
      w.version = Text(row[3]);
      w.site_id = Text(row[4]);
      w.started_at = Iso(row[5]);
      w.heartbeat_at = Iso(row[6]);
      w.heartbeat_age_seconds = row[7].as<double>();
      w.lease_ms = row[8].as<int>();
      w.jobs_in_flight = row[9].as<int>();
      w.breaker_state = Text(row[10]);
      w.stopped_at = Iso(row[11]);
      w.status = Text(row[12]);
      o.workers.push_back(std::move(w));
    }
    for (const auto& row : tx.exec(store::sql::kDashOverviewFeedback)) {
      o.feedback.push_back(DashboardFeedbackWindow{Text(row[0]), Count(row[1]), Count(row[2]), Count(row[3]),
                                                   Count(row[4]), Real(row[5]), Count(row[6])});
    }
    for (const auto& row : full ? tx.exec(store::sql::kDashOverviewSites) : pqxx::result()) {
      DashboardSite s;
      s.site_id = Text(row[0]);
      s.is_default = row[1].as<bool>();
      s.queued = Count(row[2]);
      s.retrying = Count(row[3]);
      s.submitting = Count(row[4]);
      s.polling = Count(row[5]);
      s.oldest_queued_age_seconds = Real(row[6]);
      s.paused_at = Iso(row[7]);
      s.paused_reason = Text(row[8]);
      s.served = row[9].as<bool>();
      s.open_incidents = Count(row[10]);
      s.completed_last_hour = Count(row[11]);
      s.poll_timeouts_last_hour = Count(row[12]);
      s.status_calls_per_completed = Real(row[13]);
      s.seen_gap_p50_seconds = Real(row[14]);
      s.seen_gap_p95_seconds = Real(row[15]);
      s.requests_per_s = Real(row[16]);
      s.effective_rate_per_s = Real(row[17]);
      s.blocked_until = Iso(row[18]);
      s.rate_limited = Count(row[19]);
      s.tokens_granted = Count(row[20]);
      s.max_in_flight = Real(row[21]);
      o.sites.push_back(std::move(s));
    }
    tx.commit();
    return o;
  });
}

DashboardJobPage DashboardStore::JobsPage(const DashboardJobFilter& filter,
                                          const std::optional<DashboardJobCursor>& after, int limit) {
  return Translate([&] {
    std::vector<std::string> params;
    std::string where;
    AppendFilter(filter, &where, &params, false);
    if (after) {
      params.push_back(PgTimestamp(after->created_us));
      where += store::sql::kDashCursorCreated + std::to_string(params.size());
      params.push_back(std::to_string(after->id));
      where += store::sql::kDashCursorId + std::to_string(params.size()) + store::sql::kDashCursorEnd;
    }
    // One row more than asked for says whether another page follows.
    params.push_back(std::to_string(limit + 1));
    const std::string limit_param = std::to_string(params.size());
    std::string sql = store::sql::kDashJobsUnionBegin;
    bool first = true;
    for (const auto& branch : store::sql::kDashBranches) {
      if (!filter.state.empty() && filter.state != branch.state) continue;
      sql += first ? "(" : " UNION ALL (";
      first = false;
      sql += std::string(store::sql::kDashJobsSelect) + " WHERE " + branch.where + where +
             store::sql::kDashJobsOrder + limit_param + ")";
    }
    if (first) return DashboardJobPage{};  // not a state: nothing matches
    sql += store::sql::kDashJobsUnionEnd + limit_param;

    pqxx::nontransaction tx(impl_->conn);
    auto r = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
    DashboardJobPage page;
    for (const auto& row : r) {
      if (static_cast<int>(page.jobs.size()) == limit) {
        const auto& last = page.jobs.back();
        page.next = DashboardJobCursor{last.created_us, last.id};
        break;
      }
      DashboardJobRow j;
      j.id = row[0].as<int64_t>();
      j.job_key = Text(row[1]);
      j.session_id = Text(row[2]);
      j.state = Text(row[3]);
      j.attempts = row[4].as<int>();
      j.max_attempts = row[5].as<int>();
      j.error_kind = Text(row[6]);
      j.last_http_status = row[7].is_null() ? 0 : row[7].as<int>();
      j.request_id = Text(row[8]);
      j.created_at = Iso(row[9]);
      j.finished_at = Iso(row[10]);
      j.last_error = Text(row[11]);
      j.cancel_requested_at = Iso(row[12]);
      j.created_us = row[13].as<int64_t>();
      page.jobs.push_back(std::move(j));
    }
    return page;
  });
}

std::optional<DashboardJobDetail> DashboardStore::JobsGet(int64_t id) {
  return Translate([&]() -> std::optional<DashboardJobDetail> {
    pqxx::nontransaction tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kDashJobsGet, id);
    if (r.empty()) return std::nullopt;
    const auto& row = r[0];
    DashboardJobDetail j;
    j.id = row[0].as<int64_t>();
    j.job_key = Text(row[1]);
    j.session_id = Text(row[2]);
    j.state = Text(row[3]);
    j.attempts = row[4].as<int>();
    j.max_attempts = row[5].as<int>();
    j.error_kind = Text(row[6]);
    j.last_http_status = row[7].is_null() ? 0 : row[7].as<int>();
    j.request_id = Text(row[8]);
    j.created_at = Iso(row[9]);
    j.finished_at = Iso(row[10]);
    j.response_language = Text(row[11]);
    j.priority = row[12].as<int>();
    j.polls = row[13].as<int>();
    j.run_at = Iso(row[14]);
    j.updated_at = Iso(row[15]);
    j.submitted_at = Iso(row[16]);
    j.poll_deadline = Iso(row[17]);
    j.locked_by = Text(row[18]);
    j.lease_expires_at = Iso(row[19]);
    j.cancel_requested_at = Iso(row[20]);
    j.last_error = Text(row[21]);
    j.errors_json = row[22].is_null() ? "[]" : Text(row[22]);
    j.metadata_json = row[23].is_null() ? "{}" : Text(row[23]);
    j.result_json = Text(row[24]);
    j.notification_payload = Text(row[25]);
    return j;
  });
}

std::optional<std::pair<std::string, std::optional<std::string>>> DashboardStore::JobsText(int64_t id) {
  return Translate([&]() -> std::optional<std::pair<std::string, std::optional<std::string>>> {
    pqxx::nontransaction tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kDashJobsText, id);
    if (r.empty()) return std::nullopt;
    std::optional<std::string> answer;
    if (!r[0][1].is_null()) answer = r[0][1].as<std::string>();
    return std::make_pair(Text(r[0][0]), answer);
  });
}

int DashboardStore::JobsRetry(const std::vector<int64_t>& ids) {
  return Translate([&] {
    if (ids.empty()) return 0;
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec_params(store::sql::kDashJobsRetry, IdArray(ids)));
    tx.commit();
    return n;
  });
}

int DashboardStore::JobsCancel(const std::vector<int64_t>& ids) {
  return Translate([&] {
    if (ids.empty()) return 0;
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec_params(store::sql::kDashJobsCancel, IdArray(ids)));
    tx.commit();
    return n;
  });
}

namespace {

int ActOnMatching(pqxx::connection& conn, const char* begin, const DashboardJobFilter& filter, int cap) {
  std::string sql = begin;
  std::vector<std::string> params;
  AppendFilter(filter, &sql, &params);
  params.push_back(std::to_string(cap));
  sql += store::sql::kDashJobsOrder + std::to_string(params.size()) + store::sql::kDashMatchingEnd;
  pqxx::work tx(conn);
  const int n = FirstInt(tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params)));
  tx.commit();
  return n;
}

}  // namespace

int DashboardStore::JobsRetryMatching(const DashboardJobFilter& filter, int cap) {
  return Translate(
      [&] { return ActOnMatching(impl_->conn, store::sql::kDashRetryMatchingBegin, filter, cap); });
}

int DashboardStore::JobsCancelMatching(const DashboardJobFilter& filter, int cap) {
  return Translate(
      [&] { return ActOnMatching(impl_->conn, store::sql::kDashCancelMatchingBegin, filter, cap); });
}

DashboardStore::ResolveResult DashboardStore::IncidentsResolve(int64_t id) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kDashIncidentsResolve, id);
    const bool resolved = !r.empty() && !r[0][0].is_null() && r[0][0].as<bool>();
    bool exists = resolved;
    if (!resolved) exists = tx.exec_params(store::sql::kDashIncidentsExists, id)[0][0].as<bool>();
    tx.commit();
    if (resolved) return ResolveResult::kResolved;
    return exists ? ResolveResult::kAlreadyResolved : ResolveResult::kNotFound;
  });
}

void DashboardStore::Ping() {
  Translate([&] {
    pqxx::nontransaction(impl_->conn).exec(store::sql::kDashPing);
    return 0;
  });
}

}  // namespace uppzy
