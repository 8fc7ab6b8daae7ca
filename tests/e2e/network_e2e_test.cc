// End to end over plain HTTP with many connections: the real uppzy-worker and uppzy-mock processes and a
// real PostgreSQL (issue 15: at 128 or 256 connections, submissions stalled until they timed out).
#include <gtest/gtest.h>

#include "support/support.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;

// The case: 2,000 jobs answered after 3 s, a worker with 256 connections. Before the mock's fix
// submissions got "0 bytes received" timeouts, were charged as network retries and opened the breaker.
TEST(NetworkE2E, TwoHundredFiftySixConnectionsDrainTwoThousandJobsWithoutATimeout) {
  const std::string db = test::MigratedDatabase();
  test::MockProcess mock({"--ready-after-ms", "3000"});
  test::Exec(db,
             "INSERT INTO uppzy.chat_jobs (session_id, message) "
             "SELECT 'many-' || g, 'question ' || g FROM generate_series(1, 2000) g");
  auto env = test::WorkerEnv(db, mock);
  env["UPPZY_HTTP_MAX_CONNECTIONS"] = "256";
  env["UPPZY_MAX_IN_FLIGHT"] = "3000";
  env["UPPZY_CLAIM_BATCH"] = "2000";
  env["UPPZY_POLL_INTERVAL_MS"] = "500";
  env["UPPZY_HTTP_TIMEOUT_MS"] = "5000";
  env["UPPZY_LOG_LEVEL"] = "info";
  test::Process worker({UPPZY_WORKER_BIN, "run"}, env);
  ASSERT_TRUE(test::WaitFor(
      [&] { return QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed'") == 2000; },
      60s))
      << Query(
             db,
             "SELECT string_agg(state || ':' || n, ' ') FROM (SELECT state, count(*) n FROM uppzy.chat_jobs "
             "GROUP BY state) s");
  EXPECT_EQ(QueryInt(db,
                     "SELECT count(*) FROM uppzy.chat_jobs, jsonb_array_elements(errors) e "
                     "WHERE e->>'kind' = 'network'"),
            0);
  EXPECT_EQ(QueryInt(db, "SELECT count(*) FROM uppzy.chat_jobs WHERE attempts <> 1"), 0) << "no retries";
  EXPECT_EQ(worker.Log().find("circuit_breaker"), std::string::npos) << "the breaker never opened";
  auto stats = mock.Stats();
  EXPECT_EQ(stats["submits"], 2000);
  EXPECT_EQ(stats["duplicate_submissions"], 0);
}

}  // namespace
}  // namespace uppzy
