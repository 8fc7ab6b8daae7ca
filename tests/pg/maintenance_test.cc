// The worker's maintenance loop against a real PostgreSQL: retention by state and age in batches,
// the database gauges of /metrics, and the answer of /readyz.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "runtime/maintenance.h"
#include "support/support.h"
#include "uppzy/metrics.h"

namespace uppzy {
namespace {

using test::Exec;
using test::Query;
using test::QueryInt;

void InsertFinished(const std::string& db, const std::string& state, int rows, const std::string& ago) {
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, answer, error_kind, created_at, "
       "finished_at) SELECT 's', 'm', '" +
           state + "', 1, CASE WHEN '" + state + "' = 'completed' THEN 'a' END, CASE '" + state +
           "' WHEN 'failed' THEN 'server_error' WHEN 'cancelled' THEN 'cancelled' END, now() - interval '" +
           ago + "', now() - interval '" + ago + "' FROM generate_series(1, " + std::to_string(rows) + ")");
}

long long Count(const std::string& db, const std::string& state) {
  return QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = '" + state + "'");
}

// A per-site gauge as /metrics would show it; NaN when never set.
double SiteJobs(prometheus::Registry& registry, const std::string& site, const std::string& state) {
  for (const auto& family : registry.Collect()) {
    if (family.name != "uppzy_site_jobs") continue;
    for (const auto& m : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : m.label) labels[l.name] = l.value;
      if (labels["site"] == site && labels["state"] == state) return m.gauge.value;
    }
  }
  return std::nan("");
}

Config ConfigFor(const std::string& db) {
  Config c;
  c.database_url = db;
  return c;  // retention defaults: completed 7d, failed 30d, cancelled 7d
}

TEST(Maintenance, RetentionDeletesOnlyRowsPastTheirStatesLimitInBatches) {
  const std::string db = test::MigratedDatabase();
  InsertFinished(db, "completed", 2500, "8 days");  // past 7d, more than two batches
  InsertFinished(db, "completed", 3, "6 days");
  InsertFinished(db, "failed", 4, "8 days");  // within 30d: kept
  InsertFinished(db, "failed", 2, "31 days");
  InsertFinished(db, "cancelled", 5, "8 days");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, created_at) VALUES ('s', 'm', now() - interval '60 "
       "days')");

  Config config = ConfigFor(db);
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // where the database gauges go
  runtime::Maintenance m(config, metrics);
  EXPECT_EQ(m.RunOnce(true), 2500 + 2 + 5);
  EXPECT_EQ(Count(db, "completed"), 3);
  EXPECT_EQ(Count(db, "failed"), 4);
  EXPECT_EQ(Count(db, "cancelled"), 0);
  EXPECT_EQ(Count(db, "queued"), 1) << "unfinished rows are never purged, however old";
  EXPECT_EQ(m.RunOnce(true), 0);
}

TEST(Maintenance, RetentionOffKeepsRows) {
  const std::string db = test::MigratedDatabase();
  InsertFinished(db, "completed", 3, "400 days");
  Config config = ConfigFor(db);
  config.retain_completed = std::chrono::seconds(0);
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // where the database gauges go
  runtime::Maintenance m(config, metrics);
  EXPECT_EQ(m.RunOnce(true), 0);
  EXPECT_EQ(Count(db, "completed"), 3);
}

TEST(Maintenance, GaugesAndReadinessFollowTheDatabase) {
  const std::string db = test::MigratedDatabase();
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, created_at) VALUES ('s', 'm', now() - interval '90 "
       "s'), "
       "('s', 'm', now())");
  Config config = ConfigFor(db);
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // where the database gauges go
  runtime::Maintenance m(config, metrics);
  EXPECT_FALSE(m.Ready().first);
  EXPECT_NE(m.Ready().second.find("starting"), std::string::npos);

  m.RunOnce(false);
  EXPECT_EQ(metrics.queue_depth("queued"), 2);
  EXPECT_EQ(metrics.queue_depth("polling"), 0);
  EXPECT_NEAR(metrics.oldest_queued_age(), 90, 5);
  EXPECT_EQ(metrics.open_incidents(), 0);
  EXPECT_TRUE(metrics.database_up());
  auto [ready, body] = m.Ready();
  EXPECT_TRUE(ready) << body;

  Exec(db,
       "INSERT INTO uppzy.incidents (kind, http_status, api_key_fingerprint) VALUES ('unauthorized', 401, "
       "'fp')");
  m.RunOnce(false);
  std::tie(ready, body) = m.Ready();
  EXPECT_FALSE(ready);
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["reason"], "incident_open");
  EXPECT_EQ(j["open_incidents"], 1);
  EXPECT_EQ(body.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(metrics.open_incidents(), 1);
}

// With several workers on one database, one counts the unfinished jobs for all of them (the holder of
// the gauges lock) and the others show its counts; when it goes, another takes over; counts older than
// three intervals are counted again by whoever reads them.
TEST(Maintenance, OneWorkerCountsTheQueueForEveryWorker) {
  const std::string db = test::MigratedDatabase();
  Exec(db, "INSERT INTO uppzy.sites (site_id) VALUES ('shop')");
  Exec(db,
       "INSERT INTO uppzy.chat_jobs (session_id, message, site_id, created_at) VALUES ('s', 'm', NULL, now() "
       "- "
       "interval '60 s'), ('s', 'm', NULL, now()), ('s', 'm', 'shop', now())");
  Config ca = ConfigFor(db), cb = ConfigFor(db);
  ca.worker_id = "worker-a";
  ca.site.site_id = "default-site";
  cb.worker_id = "worker-b";
  cb.site.site_id = "default-site";
  prometheus::Registry ra, rb;
  metrics::WorkerMetrics ma{ra}, mb{rb};
  runtime::Maintenance a(ca, ma), b(cb, mb);

  a.RunOnce(false);  // the first to ask takes the lock
  EXPECT_EQ(Query(db, "SELECT computed_by FROM uppzy.queue_gauges"), "worker-a");
  EXPECT_EQ(ma.queue_depth("queued"), 3);
  EXPECT_NEAR(ma.oldest_queued_age(), 60, 5);
  EXPECT_EQ(SiteJobs(ra, "default-site", "queued"), 2) << "the NULL-site jobs count under UPPZY_SITE_ID";
  EXPECT_EQ(SiteJobs(ra, "shop", "queued"), 1);

  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm'), ('s', 'm')");
  b.RunOnce(false);  // reads worker-a's counts: it does not count 5 rows itself
  EXPECT_EQ(mb.queue_depth("queued"), 3);
  EXPECT_NEAR(mb.oldest_queued_age(), 60, 5);
  EXPECT_TRUE(b.Ready().first) << b.Ready().second;
  EXPECT_EQ(Query(db, "SELECT computed_by FROM uppzy.queue_gauges"), "worker-a");
  a.RunOnce(false);
  b.RunOnce(false);
  EXPECT_EQ(ma.queue_depth("queued"), 5);
  EXPECT_EQ(mb.queue_depth("queued"), 5) << "the reader follows the counter's next count";
  // Incidents are the reader's own read: /readyz turns at once, not an interval later.
  Exec(db,
       "INSERT INTO uppzy.incidents (kind, http_status, api_key_fingerprint) VALUES ('unauthorized', 401, "
       "'fp')");
  b.RunOnce(false);
  EXPECT_FALSE(b.Ready().first);
  EXPECT_EQ(mb.open_incidents(), 1);
  Exec(db, "UPDATE uppzy.incidents SET resolved_at = now()");

  a.Stop();  // its connection ends, and the lock with it
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) VALUES ('s', 'm', 'shop')");
  b.RunOnce(false);
  EXPECT_EQ(Query(db, "SELECT computed_by FROM uppzy.queue_gauges"), "worker-b");
  EXPECT_EQ(mb.queue_depth("queued"), 6);
  EXPECT_EQ(SiteJobs(rb, "default-site", "queued"), 4);
  EXPECT_EQ(SiteJobs(rb, "shop", "queued"), 2);

  // A lock held by a session that stores nothing (a hung leader, or a pooler's server connection): the
  // stored counts age, and a reader counts them itself.
  b.Stop();
  pqxx::connection holder(db);
  pqxx::nontransaction(holder).exec("SELECT pg_advisory_lock(uppzy.gauges_lock_key())");
  Exec(db, "UPDATE uppzy.queue_gauges SET computed_at = now() - interval '1 hour'");
  Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('s', 'm')");
  Config cc = ConfigFor(db);
  cc.worker_id = "worker-c";
  prometheus::Registry rc;
  metrics::WorkerMetrics mc{rc};
  runtime::Maintenance c(cc, mc);
  c.RunOnce(false);
  EXPECT_EQ(mc.queue_depth("queued"), 7);
  EXPECT_EQ(Query(db, "SELECT computed_by FROM uppzy.queue_gauges"), "worker-c");
  c.RunOnce(false);
  EXPECT_EQ(Query(db, "SELECT computed_by FROM uppzy.queue_gauges"), "worker-c");

  // A row someone edited by hand: entries of the wrong shape are skipped, the rest still count, and
  // the worker stays ready.
  Exec(db,
       "UPDATE uppzy.queue_gauges SET computed_at = now(), counts = jsonb_build_array(jsonb_build_array(1, "
       "2), 'x', jsonb_build_array(NULL, 'queued', 'many', 0), jsonb_build_array(NULL, 'queued', 2, "
       "extract(epoch FROM now()) - 30))");
  c.RunOnce(false);
  EXPECT_EQ(mc.queue_depth("queued"), 2);
  EXPECT_NEAR(mc.oldest_queued_age(), 30, 5);
  EXPECT_TRUE(c.Ready().first) << c.Ready().second;
}

TEST(Maintenance, AnUnreachableDatabaseIsNotReady) {
  Config config;
  config.database_url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2";
  prometheus::Registry registry;
  metrics::WorkerMetrics metrics{registry};  // where the database gauges go
  runtime::Maintenance m(config, metrics);
  metrics.SetDatabaseUp(true);  // as a previous refresh would have left it
  EXPECT_EQ(m.RunOnce(true), 0);
  auto [ready, body] = m.Ready();
  EXPECT_FALSE(ready);
  EXPECT_EQ(nlohmann::json::parse(body)["reason"], "database_unreachable") << body;
  EXPECT_FALSE(metrics.database_up());
}

}  // namespace
}  // namespace uppzy
