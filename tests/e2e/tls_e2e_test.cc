// End to end over TLS: the real uppzy-worker talks https to nginx (scripts/tls-front, a throwaway CA
// made by openssl), which proxies to the real uppzy-mock; a real PostgreSQL. nginx speaks HTTP/1.1 only
// or HTTP/2 too. The worker trusts the test CA through UPPZY_CA_FILE and never turns checks off.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "support/support.h"
#include "support/tls_front.h"

namespace uppzy {
namespace {

using namespace std::chrono_literals;
using test::Query;
using test::QueryInt;
using test::TlsFront;

class TlsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = TlsFront::Unavailable(); !why.empty()) GTEST_SKIP() << "SKIP: " << why;
    db_ = test::MigratedDatabase();
  }

  void StartMock(std::vector<std::string> args) {
    mock_ = std::make_unique<test::MockProcess>(std::move(args));
  }

  std::unique_ptr<test::Process> StartWorker(const TlsFront& front,
                                             std::map<std::string, std::string> extra = {}) {
    auto env = test::WorkerEnv(db_, *mock_);
    env["UPPZY_BASE_URL"] = front.base_url();
    env["UPPZY_CA_FILE"] = front.ca_file();
    env["UPPZY_LOG_LEVEL"] = "info";
    for (auto& [k, v] : extra) env[k] = v;
    return std::make_unique<test::Process>(std::vector<std::string>{UPPZY_WORKER_BIN, "run"}, env);
  }

  void EnqueueMany(int n, const std::string& prefix) {
    test::Exec(db_, "INSERT INTO uppzy.chat_jobs (session_id, message) SELECT '" + prefix +
                        "-' || g, 'question ' || g FROM generate_series(1, " + std::to_string(n) + ") g");
  }

  bool WaitCompleted(long long n, std::chrono::milliseconds timeout) {
    return test::WaitFor(
        [&] { return QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed'") == n; },
        timeout);
  }

  std::string States() {
    return Query(
        db_,
        "SELECT string_agg(state || ':' || n, ' ') FROM (SELECT state, count(*) n FROM uppzy.chat_jobs "
        "GROUP BY state) s");
  }

  // Attempts that failed with a network error (a timeout waiting for a connection would be one).
  long long NetworkErrors() {
    return QueryInt(db_,
                    "SELECT count(*) FROM uppzy.chat_jobs, jsonb_array_elements(errors) e "
                    "WHERE e->>'kind' = 'network'");
  }

  std::string db_;
  std::unique_ptr<test::MockProcess> mock_;
};

TEST_F(TlsE2E, JobsCompleteOverHttp11Only) {
  StartMock({"--ready-after-ms", "100"});
  TlsFront front(*mock_, /*http2=*/false);
  EnqueueMany(50, "h1");
  auto worker = StartWorker(front);
  ASSERT_TRUE(WaitCompleted(50, 30s)) << States() << "\n" << worker->Log() << front.ErrorLog();
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE answer <> 'echo: ' || message"), 0);
  EXPECT_EQ(mock_->Stats()["duplicate_submissions"], 0);
  EXPECT_TRUE(test::WaitFor([&] { return front.Requests("HTTP/1.1") >= 100; }, 5s)) << "submit + poll each";
  EXPECT_EQ(front.Requests("HTTP/2.0"), 0);
}

TEST_F(TlsE2E, JobsCompleteOverHttp2) {
  StartMock({"--ready-after-ms", "100"});
  TlsFront front(*mock_, /*http2=*/true);
  EnqueueMany(50, "h2");
  auto worker = StartWorker(front);
  ASSERT_TRUE(WaitCompleted(50, 30s)) << States() << "\n" << worker->Log() << front.ErrorLog();
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE answer <> 'echo: ' || message"), 0);
  EXPECT_TRUE(test::WaitFor([&] { return front.Requests("HTTP/2.0") >= 100; }, 5s));
  EXPECT_EQ(front.Requests("HTTP/1.1"), 0);
}

// A certificate that does not verify is refused: the job's last_error says so, nothing reaches the
// mock, and the attempt is charged as a network error (README, "TLS").
void ExpectRefused(TlsE2E* t, const std::string& db, const std::string& curl_words,
                   const std::function<std::unique_ptr<test::Process>()>& start) {
  test::Exec(db, "INSERT INTO uppzy.chat_jobs (session_id, message, max_attempts) VALUES ('s', 'q', 2)");
  auto worker = start();
  ASSERT_TRUE(test::WaitFor([&] { return Query(db, "SELECT state FROM uppzy.chat_jobs") == "failed"; }, 30s))
      << Query(db, "SELECT state || ' ' || coalesce(last_error, '') FROM uppzy.chat_jobs") << worker->Log();
  const std::string last_error = Query(db, "SELECT last_error FROM uppzy.chat_jobs");
  EXPECT_NE(last_error.find("TLS certificate refused"), std::string::npos) << last_error;
  EXPECT_NE(last_error.find(curl_words), std::string::npos) << last_error;
  EXPECT_EQ(Query(db, "SELECT error_kind FROM uppzy.chat_jobs"), "network");
  EXPECT_EQ(Query(db, "SELECT attempts FROM uppzy.chat_jobs"), "2");
  (void)t;
}

TEST_F(TlsE2E, CertificateForAnotherHostIsRefused) {
  StartMock({});
  TlsFront front(*mock_, /*http2=*/true, TlsFront::Cert::kWrongHost);
  ExpectRefused(this, db_, "localhost", [&] { return StartWorker(front); });
  EXPECT_EQ(mock_->Stats()["requests_total"], 0);
}

TEST_F(TlsE2E, UnknownCaIsRefused) {
  StartMock({});
  TlsFront front(*mock_, /*http2=*/true, TlsFront::Cert::kUnknownCa);
  ExpectRefused(this, db_, "certificate", [&] { return StartWorker(front); });
  EXPECT_EQ(mock_->Stats()["requests_total"], 0);
}

// The client hands curl 100 transfers per connection for HTTP/2 multiplexing only once an answer came
// over HTTP/2. Against an HTTP/1.1-only server those transfers would queue inside curl, where the
// wait counts against UPPZY_HTTP_TIMEOUT_MS: with 16 connections and 40 ms per answer, 1,600 of them
// need 4 s to drain, twice the 2 s timeout here. None may time out.
TEST_F(TlsE2E, Http11OnlyWithTwoThousandJobsInFlightNoTransferTimesOut) {
  StartMock({"--ready-after-ms", "500", "--latency-ms", "40", "--latency-fixed"});
  TlsFront front(*mock_, /*http2=*/false);
  EnqueueMany(2000, "load");
  auto worker = StartWorker(front, {{"UPPZY_MAX_IN_FLIGHT", "2000"},
                                    {"UPPZY_CLAIM_BATCH", "2000"},
                                    {"UPPZY_HTTP_MAX_CONNECTIONS", "16"},
                                    {"UPPZY_HTTP_TIMEOUT_MS", "2000"},
                                    {"UPPZY_POLL_INTERVAL_MS", "1000"},
                                    {"UPPZY_POLL_TIMEOUT_MS", "60000"}});
  ASSERT_TRUE(WaitCompleted(2000, 90s)) << States() << "\n" << front.ErrorLog();
  EXPECT_EQ(NetworkErrors(), 0);
  EXPECT_EQ(QueryInt(db_, "SELECT count(*) FROM uppzy.chat_jobs WHERE attempts <> 1"), 0);
  EXPECT_EQ(mock_->Stats()["duplicate_submissions"], 0);
  EXPECT_EQ(front.Requests("HTTP/2.0"), 0);
}

}  // namespace
}  // namespace uppzy
