// The worker's maintenance loop against a real PostgreSQL: retention by state and age in batches,
// the database gauges of /metrics, and the answer of /readyz.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/maintenance.h"
#include "support/support.h"
#include "uppzy/metrics.h"

namespace uppzy {
namespace {

using test::Exec;
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
