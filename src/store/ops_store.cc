#include "uppzy/ops_store.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <utility>

#include "store/embedded_migrations.h"
#include "store/queries.h"
#include "store/queries_ops.h"
#include "store/sql_values.h"
#include "store/translate.h"

namespace uppzy {
namespace {

using store::IdArray;
using store::Real;
using store::Text;
using store::Translate;

// "2024-05-01 12:00:03.123456+00" (a UTC session's timestamptz text) -> "2024-05-01T12:00:03Z".
std::string IsoUtc(const pqxx::field& f) {
  if (f.is_null()) return {};
  std::string s = f.as<std::string>();
  const auto plus = s.find_first_of("+.", 19);
  if (s.size() >= 19) s = s.substr(0, plus == std::string::npos ? s.size() : plus);
  if (s.size() > 10 && s[10] == ' ') s[10] = 'T';
  return s + "Z";
}

void ReadSummary(const pqxx::row& row, JobSummary* j) {
  j->id = row[0].as<int64_t>();
  j->job_key = Text(row[1]);
  j->session_id = Text(row[2]);
  j->state = Text(row[3]);
  j->attempts = row[4].as<int>();
  j->max_attempts = row[5].as<int>();
  j->error_kind = Text(row[6]);
  j->last_http_status = row[7].is_null() ? 0 : row[7].as<int>();
  j->request_id = Text(row[8]);
  j->created_at = IsoUtc(row[9]);
  j->finished_at = IsoUtc(row[10]);
}

std::optional<int> Int(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int>();
}

// The ten columns every sites statement returns (queries_ops.h), from `row[0]` on.
SiteRow ReadSiteRow(const pqxx::row& row) {
  SiteRow s;
  s.site_id = Text(row[0]);
  s.settings.requests_per_s = Real(row[1]);
  s.settings.burst = Int(row[2]);
  s.settings.max_in_flight = Int(row[3]);
  s.settings.poll_interval_ms = Int(row[4]);
  s.settings.poll_timeout_ms = Int(row[5]);
  s.paused_at = IsoUtc(row[6]);
  s.paused_reason = Text(row[7]);
  if (!row[8].is_null()) s.settings.poll_mode = row[8].as<std::string>();
  s.settings.poll_target_delay_ms = Int(row[9]);
  return s;
}

// A setting of SitesSet as its two parameters: given, and its text (nullopt: NULL).
template <typename T>
std::pair<bool, std::optional<std::string>> SettingParams(const std::optional<std::optional<T>>& change) {
  if (!change || !*change) return {change.has_value(), std::nullopt};
  return {true, pqxx::to_string(**change)};
}

// libpqxx 6.4 sends a null `const char*` as NULL.
const char* OrNull(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

// The row before (locked) and what `change` returns, in one transaction; `change` returns the
// statement's result, empty when it changed no row.
template <typename Fn>
std::optional<SiteChange> ChangeSite(pqxx::connection& conn, const std::string& site_id, Fn&& change) {
  pqxx::work tx(conn);
  SiteChange out;
  auto before = tx.exec_params(store::sql::kOpsSitesGetForUpdate, site_id);
  if (!before.empty()) out.before = ReadSiteRow(before[0]);
  auto after = change(tx);
  if (after.empty()) return std::nullopt;
  out.after = ReadSiteRow(after[0]);
  tx.commit();
  return out;
}

int FirstInt(const pqxx::result& r) { return r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<int>(); }

}  // namespace

struct OpsStore::Impl {
  explicit Impl(const std::string& url) : conn(url) {
    pqxx::nontransaction(conn).exec(store::sql::kOpsSession);
  }
  pqxx::connection conn;
  // This connection's session holds the gauges lock (Gauges): it stays held until the connection ends.
  bool gauges_leader = false;
};

OpsStore::OpsStore(const std::string& database_url) {
  Translate([&] {
    impl_ = std::make_unique<Impl>(database_url);
    return 0;
  });
}

OpsStore::~OpsStore() = default;

void OpsStore::RolesApply() {
  Translate([&] {
    const store::EmbeddedMigration* roles = nullptr;
    for (const auto& m : store::EmbeddedMigrations()) {
      if (m.name == store::sql::kOpsRolesFile) roles = &m;
    }
    if (roles == nullptr) throw StoreError("migrations/roles.sql is not embedded in this build", false);
    pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsLock);
    try {
      pqxx::work tx(impl_->conn);
      tx.exec(roles->sql);
      tx.commit();
    } catch (...) {
      try {
        pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsUnlock);
      } catch (...) {
      }
      throw;
    }
    pqxx::nontransaction(impl_->conn).exec(store::sql::kMigrationsUnlock);
    return 0;
  });
}

std::vector<StateCount> OpsStore::StatsByState(bool unfinished_only) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<StateCount> out;
    for (const auto& row :
         tx.exec(unfinished_only ? store::sql::kOpsStatsUnfinished : store::sql::kOpsStats)) {
      out.push_back(StateCount{Text(row[0]), row[1].as<long long>(), Real(row[2])});
    }
    return out;
  });
}

std::vector<HealthWindow> OpsStore::HealthWindows() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<HealthWindow> out;
    for (const auto& row : tx.exec(store::sql::kOpsHealth)) {
      HealthWindow h;
      h.period = Text(row[0]);
      h.finished = row[1].as<long long>();
      h.completed = row[2].as<long long>();
      h.failed = row[3].as<long long>();
      h.cancelled = row[4].as<long long>();
      h.poll_timeouts = row[5].as<long long>();
      h.timeout_rate = Real(row[6]);
      h.retried = row[7].as<long long>();
      h.retry_rate = Real(row[8]);
      h.p50_seconds = Real(row[9]);
      h.p95_seconds = Real(row[10]);
      h.failures_by_kind_json = Text(row[11]);
      h.feedback_delivered = row[12].as<long long>();
      h.feedback_failed = row[13].as<long long>();
      h.feedback_good = row[14].as<long long>();
      h.feedback_bad = row[15].as<long long>();
      h.feedback_good_ratio = Real(row[16]);
      out.push_back(std::move(h));
    }
    return out;
  });
}

long long OpsStore::DeliveryFailuresCount() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    return tx.exec(store::sql::kOpsDeliveryFailures)[0][0].as<long long>();
  });
}

std::vector<JobSummary> OpsStore::JobsList(const JobFilter& f) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    const long long since = f.since ? static_cast<long long>(f.since->count()) : -1;
    std::vector<JobSummary> out;
    for (const auto& row : tx.exec_params(store::sql::kOpsJobsList, f.state, f.error_kind, since, f.limit)) {
      JobSummary j;
      ReadSummary(row, &j);
      out.push_back(std::move(j));
    }
    return out;
  });
}

std::optional<JobDetail> OpsStore::JobsGet(int64_t id, bool with_text) {
  return Translate([&]() -> std::optional<JobDetail> {
    pqxx::work tx(impl_->conn);  // one snapshot for both reads
    auto r = tx.exec_params(store::sql::kOpsJobsGet, id);
    if (r.empty()) return std::nullopt;
    const auto& row = r[0];
    JobDetail j;
    ReadSummary(row, &j);
    j.response_language = Text(row[11]);
    j.priority = row[12].as<int>();
    j.polls = row[13].as<int>();
    j.run_at = IsoUtc(row[14]);
    j.updated_at = IsoUtc(row[15]);
    j.submitted_at = IsoUtc(row[16]);
    j.poll_deadline = IsoUtc(row[17]);
    j.locked_by = Text(row[18]);
    j.lease_expires_at = IsoUtc(row[19]);
    j.cancel_requested_at = IsoUtc(row[20]);
    j.last_error = Text(row[21]);
    j.errors_json = Text(row[22]);
    j.metadata_json = Text(row[23]);
    j.result_json = Text(row[24]);
    if (with_text) {
      auto t = tx.exec_params(store::sql::kOpsJobsGetText, id);
      if (!t.empty()) {
        j.message = Text(t[0][0]);
        if (!t[0][1].is_null()) j.answer = t[0][1].as<std::string>();
      }
    }
    tx.commit();
    return j;
  });
}

std::map<int64_t, std::string> OpsStore::JobsStates(const std::vector<int64_t>& ids) {
  return Translate([&] {
    std::map<int64_t, std::string> out;
    if (ids.empty()) return out;
    pqxx::nontransaction tx(impl_->conn);
    for (const auto& row : tx.exec_params(store::sql::kOpsJobsStates, IdArray(ids))) {
      out[row[0].as<int64_t>()] = Text(row[1]);
    }
    return out;
  });
}

int OpsStore::JobsRetry(const std::vector<int64_t>& ids) {
  return Translate([&] {
    if (ids.empty()) return 0;
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec_params(store::sql::kOpsJobsRetry, IdArray(ids)));
    tx.commit();
    return n;
  });
}

int OpsStore::JobsRetryFailed(const std::string& error_kind, std::optional<std::chrono::seconds> since) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    const long long s = since ? static_cast<long long>(since->count()) : -1;
    const int n = FirstInt(tx.exec_params(store::sql::kOpsJobsRetryFailed, error_kind, s));
    tx.commit();
    return n;
  });
}

int OpsStore::JobsCancel(const std::vector<int64_t>& ids) {
  return Translate([&] {
    if (ids.empty()) return 0;
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec_params(store::sql::kOpsJobsCancel, IdArray(ids)));
    tx.commit();
    return n;
  });
}

int OpsStore::JobsPurge(const std::string& state, std::chrono::seconds older_than, int batch_size) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec_params(store::sql::kOpsJobsPurge, state,
                                          static_cast<long long>(older_than.count()), batch_size));
    tx.commit();
    return n;
  });
}

bool OpsStore::IncidentsResolve(int64_t id) {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    auto r = tx.exec_params(store::sql::kOpsIncidentsResolve, id);
    tx.commit();
    return !r.empty() && !r[0][0].is_null() && r[0][0].as<bool>();
  });
}

int OpsStore::IncidentsResolveAll() {
  return Translate([&] {
    pqxx::work tx(impl_->conn);
    const int n = FirstInt(tx.exec(store::sql::kOpsIncidentsResolveAll));
    tx.commit();
    return n;
  });
}

long long OpsStore::IncidentsOpenCount() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    return tx.exec(store::sql::kOpsIncidentsOpenCount)[0][0].as<long long>();
  });
}

std::vector<AnswerTimeRow> OpsStore::AnswerTimesRecent(std::chrono::milliseconds window, int limit,
                                                       std::chrono::milliseconds settle) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<AnswerTimeRow> out;
    for (const auto& row :
         tx.exec_params(store::sql::kOpsAnswerTimesRecent, static_cast<long long>(window.count()),
                        std::max(0, limit), static_cast<long long>(settle.count()))) {
      AnswerTimeRow a;
      a.ready_after_ms = row[0].as<int>();
      if (!row[1].is_null()) a.seen_after_ms = row[1].as<int>();
      a.site_id = row[2].as<std::string>();
      out.push_back(a);
    }
    return out;
  });
}

std::vector<SitePolling> OpsStore::SitesPolling() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<SitePolling> out;
    for (const auto& row : tx.exec(store::sql::kOpsSitesPolling)) {
      SitePolling p;
      p.site_id = row[0].as<std::string>();
      if (!row[1].is_null()) p.poll_interval_ms = row[1].as<int>();
      if (!row[2].is_null()) p.poll_timeout_ms = row[2].as<int>();
      if (!row[3].is_null()) p.poll_mode = row[3].as<std::string>();
      if (!row[4].is_null()) p.poll_target_delay_ms = row[4].as<int>();
      out.push_back(std::move(p));
    }
    return out;
  });
}

std::vector<SiteStatus> OpsStore::SitesList() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<SiteStatus> out;
    for (const auto& row : tx.exec(store::sql::kOpsSitesList)) {
      SiteStatus s;
      s.site = ReadSiteRow(row);
      s.is_default = row[10].as<bool>();
      s.queued = row[11].as<long long>();
      s.retrying = row[12].as<long long>();
      s.submitting = row[13].as<long long>();
      s.polling = row[14].as<long long>();
      s.oldest_queued_age_s = Real(row[15]);
      s.served = row[16].as<bool>();
      s.effective_rate_per_s = Real(row[17]);
      s.blocked_until = IsoUtc(row[18]);
      s.rate_limited = row[19].as<long long>();
      s.tokens_granted = row[20].as<long long>();
      s.open_incidents = row[21].as<long long>();
      out.push_back(std::move(s));
    }
    return out;
  });
}

namespace {

// The counts of kOpsGaugesShared ([[site_id, state, jobs, oldest created_at epoch], ...]) and its
// per-site incidents ([[site_id, open], ...]) as WorkerGauges. uppzy.queue_gauges is a table anyone with
// the grant may edit: an entry of the wrong shape is skipped (the next count replaces the row), never a
// reason to report the database unreachable.
void ReadGaugeCounts(const std::string& counts_json, double now_epoch, const std::string& sites_json,
                     WorkerGauges* g) {
  static constexpr const char* kUnfinished[] = {"queued", "submitting", "polling", "retrying"};
  for (const char* state : kUnfinished) g->states.push_back(StateCount{state, 0, std::nullopt});
  const auto site_of = [](const nlohmann::json& v) { return v.is_null() || v.is_string(); };
  const nlohmann::json sites = nlohmann::json::parse(sites_json, nullptr, false);
  for (const auto& site : sites.is_array() ? sites : nlohmann::json::array()) {
    if (!site.is_array() || site.size() < 2 || !site_of(site[0]) || !site[1].is_number_integer()) continue;
    SiteStatus s;
    s.is_default = site[0].is_null();
    if (!s.is_default) s.site.site_id = site[0].get<std::string>();
    s.open_incidents = site[1].get<long long>();
    g->sites.push_back(std::move(s));
  }
  const nlohmann::json counts = nlohmann::json::parse(counts_json, nullptr, false);
  for (const auto& c : counts.is_array() ? counts : nlohmann::json::array()) {
    if (!c.is_array() || c.size() < 4 || !site_of(c[0]) || !c[1].is_string() || !c[2].is_number_integer() ||
        !c[3].is_number()) {
      continue;
    }
    const bool no_site = c[0].is_null();
    const std::string site = no_site ? std::string() : c[0].get<std::string>();
    const std::string state = c[1].get<std::string>();
    const long long jobs = c[2].get<long long>();
    const double age = now_epoch - c[3].get<double>();
    for (StateCount& sc : g->states) {
      if (sc.state != state) continue;
      sc.jobs += jobs;
      sc.oldest_age_seconds = std::max(sc.oldest_age_seconds.value_or(age), age);
    }
    for (SiteStatus& s : g->sites) {
      if (s.is_default != no_site || s.site.site_id != site) continue;
      if (state == "queued") s.queued += jobs;
      if (state == "retrying") s.retrying += jobs;
      if (state == "submitting") s.submitting += jobs;
      if (state == "polling") s.polling += jobs;
    }
  }
}

}  // namespace

WorkerGauges OpsStore::Gauges(const std::string& worker_id, std::chrono::milliseconds fresh_for) {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    const pqxx::row row = tx.exec_params1(store::sql::kOpsGaugesShared, worker_id, impl_->gauges_leader,
                                          static_cast<long long>(fresh_for.count()));
    WorkerGauges g;
    g.leads = row[0].as<bool>();
    impl_->gauges_leader = g.leads;
    ReadGaugeCounts(Text(row[1]), row[2].as<double>(), Text(row[4]), &g);
    g.open_incidents = row[3].as<long long>();
    return g;
  });
}

SiteChange OpsStore::SitesSet(const std::string& site_id, const SiteSettingsChange& change) {
  return Translate([&] {
    const auto rate = SettingParams(change.requests_per_s);
    const auto burst = SettingParams(change.burst);
    const auto in_flight = SettingParams(change.max_in_flight);
    const auto interval = SettingParams(change.poll_interval_ms);
    const auto timeout = SettingParams(change.poll_timeout_ms);
    const auto mode = SettingParams(change.poll_mode);
    const auto target = SettingParams(change.poll_target_delay_ms);
    return *ChangeSite(impl_->conn, site_id, [&](pqxx::work& tx) {
      return tx.exec_params(store::sql::kOpsSitesSet, site_id, rate.first, OrNull(rate.second), burst.first,
                            OrNull(burst.second), in_flight.first, OrNull(in_flight.second), interval.first,
                            OrNull(interval.second), timeout.first, OrNull(timeout.second), mode.first,
                            OrNull(mode.second), target.first, OrNull(target.second));
    });
  });
}

SiteChange OpsStore::SitesPause(const std::string& site_id, const std::optional<std::string>& reason) {
  return Translate([&] {
    return *ChangeSite(impl_->conn, site_id, [&](pqxx::work& tx) {
      return tx.exec_params(store::sql::kOpsSitesPause, site_id, OrNull(reason));
    });
  });
}

std::optional<SiteChange> OpsStore::SitesResume(const std::string& site_id) {
  return Translate([&] {
    return ChangeSite(impl_->conn, site_id,
                      [&](pqxx::work& tx) { return tx.exec_params(store::sql::kOpsSitesResume, site_id); });
  });
}

std::vector<SitePollingHealth> OpsStore::SitesPollingHealth() {
  return Translate([&] {
    pqxx::nontransaction tx(impl_->conn);
    std::vector<SitePollingHealth> out;
    for (const auto& row : tx.exec(store::sql::kOpsSitesPollingHealth)) {
      SitePollingHealth h;
      if (!row[0].is_null()) h.site_id = row[0].as<std::string>();
      h.completed = row[1].as<long long>();
      h.poll_timeouts = row[2].as<long long>();
      h.status_calls_per_completed = Real(row[3]);
      h.seen_gap_p50_s = Real(row[4]);
      h.seen_gap_p95_s = Real(row[5]);
      h.answer_seen_p50_s = Real(row[6]);
      out.push_back(std::move(h));
    }
    return out;
  });
}

}  // namespace uppzy
