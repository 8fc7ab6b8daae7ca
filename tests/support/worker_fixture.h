// WorkerFixture: the end-to-end test fixture of one real uppzy-worker process against a real
// uppzy-mock process (answers ready after 100 ms, API key `key_`) and a fresh migrated database `db_`.
// A test starts the worker itself, with extra environment when it needs it, and enqueues jobs with
// plain SQL as an app would. Not thread-safe (one test's thread).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "support/support.h"

namespace uppzy::test {

class WorkerFixture : public ::testing::Test {
 protected:
  void SetUp() override;

  // `uppzy-worker run` with WorkerEnv (short test timings) and `extra` on top.
  std::unique_ptr<Process> StartWorker(const std::map<std::string, std::string>& extra = {});
  // INSERTs a job as an app would; returns its id.
  long long Enqueue(const std::string& message, int max_attempts = 3, const std::string& session = "sess-1");
  // `SELECT expr FROM uppzy.chat_jobs WHERE id = id`, as text ("" for NULL).
  std::string Field(long long id, const std::string& expr);
  // Waits until the job's state is `state`; false after `timeout`.
  bool WaitState(long long id, const std::string& state,
                 std::chrono::milliseconds timeout = std::chrono::seconds(20));

  std::string db_;
  std::string key_ = "test-key-S3CRET-91c2";  // a test checks that no log line carries it
  std::unique_ptr<MockProcess> mock_;
};

}  // namespace uppzy::test
