#include "support/worker_fixture.h"

#include <pqxx/pqxx>
#include <vector>

namespace uppzy::test {

void WorkerFixture::SetUp() {
  db_ = MigratedDatabase();
  mock_ = std::make_unique<MockProcess>(std::vector<std::string>{"--ready-after-ms", "100"}, key_);
}

std::unique_ptr<Process> WorkerFixture::StartWorker(const std::map<std::string, std::string>& extra) {
  auto env = WorkerEnv(db_, *mock_);
  for (const auto& [k, v] : extra) env[k] = v;
  return std::make_unique<Process>(std::vector<std::string>{UPPZY_WORKER_BIN, "run"}, env);
}

long long WorkerFixture::Enqueue(const std::string& message, int max_attempts, const std::string& session) {
  pqxx::connection c(db_);
  pqxx::work tx(c);
  auto r = tx.exec_params(
      "INSERT INTO uppzy.chat_jobs (session_id, message, max_attempts) VALUES ($1, $2, $3) RETURNING id",
      session, message, max_attempts);
  tx.commit();
  return r[0][0].as<long long>();
}

std::string WorkerFixture::Field(long long id, const std::string& expr) {
  return Query(db_, "SELECT " + expr + " FROM uppzy.chat_jobs WHERE id = " + std::to_string(id));
}

bool WorkerFixture::WaitState(long long id, const std::string& state, std::chrono::milliseconds timeout) {
  return WaitFor([&] { return Field(id, "state") == state; }, timeout);
}

}  // namespace uppzy::test
