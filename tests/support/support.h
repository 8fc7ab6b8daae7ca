// Test support: the throwaway PostgreSQL (a fresh database per test, built from migrations/), real
// processes (uppzy-worker, uppzy-mock) and small HTTP helpers. Not thread-safe unless stated.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/wait_for.h"  // WaitFor: every wait in a test is on a condition

namespace uppzy::test {

// The throwaway server's admin URL (database `postgres`), from UPPZY_TEST_DATABASE_URL or the CTest
// fixture's url file.
std::string AdminUrl();
// A new, empty database on the throwaway server; returns its URL.
std::string FreshDatabase();
// A new database with every migration applied; returns its URL.
std::string MigratedDatabase();
// Applies to the database at `url` (a fresh one) the numbered migrations whose file names sort before
// `first_not_applied` (e.g. "0008"), recorded the way `migrate` records them, so that a test can fill
// an older schema with rows and then run Store::Migrate().
void MigrateUpTo(const std::string& url, const std::string& first_not_applied);

// First column of the first row as text ("" for no row or NULL).
std::string Query(const std::string& url, const std::string& sql);
long long QueryInt(const std::string& url, const std::string& sql);
void Exec(const std::string& url, const std::string& sql);
// Runs `sql`; returns the error text the database gave, or "" when it succeeded.
std::string ErrorOf(const std::string& url, const std::string& sql);

// Restarts the throwaway PostgreSQL (pg_ctl restart -m fast, same port). Chaos tests only.
void RestartPostgres();
// Terminates every other backend connected to the database at `url`; returns how many.
int TerminateBackends(const std::string& url);

// A child process with its own environment; stdout+stderr go to a log file. Killed on destruction.
class Process {
 public:
  Process(std::vector<std::string> argv, std::map<std::string, std::string> env);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  void Signal(int sig);
  // Exit code, or -1 if still running after `timeout` (a signal death is 128 + signo).
  int Wait(std::chrono::milliseconds timeout);
  bool Running();
  pid_t pid() const { return pid_; }
  std::string Log() const;
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
  std::string log_path_;
};

// The port a process announced with "http_port=N" in its log (`uppzy-worker run` and `dashboard` do,
// once they listen), waiting up to `timeout` for the line; "" if it never came.
std::string HttpPortFromLog(const Process& p, std::chrono::milliseconds timeout);

// Runs a command to completion; returns its exit code and fills `output` (stdout+stderr).
int RunCommand(std::vector<std::string> argv, std::map<std::string, std::string> env, std::string* output);

// `uppzy-worker ARGS...` against the database at `url` (as DATABASE_URL); as RunCommand.
int RunWorkerCli(const std::string& url, std::vector<std::string> args, std::string* output);
// The same, for a command that prints JSON: checks (EXPECT) that it exits `expect_rc` and that its
// output parses; returns the parsed document (discarded when it did not parse).
nlohmann::json RunWorkerCliJson(const std::string& url, std::vector<std::string> args, int expect_rc = 0);

// HTTP over 127.0.0.1 with libcurl: returns the status (0 on failure) and fills `body`.
long HttpGet(const std::string& url, std::string* body);
long HttpPost(const std::string& url, const std::string& payload, std::string* body);

// uppzy-mock as a real process on a free port.
class MockProcess {
 public:
  explicit MockProcess(std::vector<std::string> extra_args = {}, std::string api_key = "test-key");
  std::string base_url() const;  // http://127.0.0.1:PORT/api/v1
  std::string root() const;      // http://127.0.0.1:PORT
  nlohmann::json Stats() const;
  const std::string& api_key() const { return api_key_; }
  Process& process() { return *proc_; }

 private:
  std::string api_key_;
  int port_ = 0;
  std::unique_ptr<Process> proc_;
};

// Environment for `uppzy-worker run` against `mock` and `db`, with short test timings.
std::map<std::string, std::string> WorkerEnv(const std::string& db, const MockProcess& mock);

// Peak resident set size of a running process, in KiB (VmHWM).
long PeakRssKiB(pid_t pid);

}  // namespace uppzy::test
