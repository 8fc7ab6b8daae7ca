#include "support/support.h"

#include <gtest/gtest.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <pqxx/pqxx>
#include <random>
#include <sstream>
#include <stdexcept>

#include "store/embedded_migrations.h"
#include "uppzy/store.h"

namespace uppzy::test {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string UniqueName(const std::string& prefix) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
         std::to_string(rd() % 100000);
}

size_t Collect(char* ptr, size_t size, size_t n, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * n);
  return size * n;
}

long Http(const std::string& url, const std::string* payload, std::string* body) {
  CURL* c = curl_easy_init();
  body->clear();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_slist* headers = nullptr;
  if (payload) {
    headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload->c_str());
  }
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  return status;
}

}  // namespace

std::string AdminUrl() {
  if (const char* env = std::getenv("UPPZY_TEST_DATABASE_URL"); env && *env) return env;
  std::string url = ReadFile(std::string(UPPZY_TEST_PGDIR) + "/url");
  if (url.empty()) throw std::runtime_error("no test PostgreSQL: run the pg_start fixture (ctest) first");
  return url;
}

std::string FreshDatabase() {
  const std::string admin = AdminUrl();
  const std::string name = UniqueName("uppzy_test");
  {
    pqxx::connection c(admin);
    pqxx::nontransaction tx(c);
    tx.exec("CREATE DATABASE " + name);
  }
  auto slash = admin.rfind('/');
  return admin.substr(0, slash + 1) + name;
}

std::string MigratedDatabase() {
  std::string url = FreshDatabase();
  Store store(url);
  store.Migrate();
  return url;
}

void MigrateUpTo(const std::string& url, const std::string& first_not_applied) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  tx.exec(
      "CREATE SCHEMA IF NOT EXISTS uppzy; CREATE TABLE uppzy.schema_migrations (version int PRIMARY KEY, "
      "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
  for (const auto& m : store::EmbeddedMigrations()) {
    if (m.name >= first_not_applied || m.name == "roles.sql") continue;
    tx.exec(m.sql);
    tx.exec_params("INSERT INTO uppzy.schema_migrations (version, name) VALUES ($1, $2)",
                   std::stoi(m.name.substr(0, 4)), m.name);
  }
}

std::string Query(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  auto r = tx.exec(sql);
  if (r.empty() || r[0].empty() || r[0][0].is_null()) return {};
  return r[0][0].as<std::string>();
}

long long QueryInt(const std::string& url, const std::string& sql) {
  std::string v = Query(url, sql);
  return v.empty() ? 0 : std::stoll(v);
}

void Exec(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

std::string ErrorOf(const std::string& url, const std::string& sql) {
  try {
    Exec(url, sql);
    return "";
  } catch (const pqxx::sql_error& e) {
    return e.what();
  }
}

void RestartPostgres() {
  const char* dir = std::getenv("UPPZY_TEST_PGDIR");
  std::string out;
  int rc = RunCommand({std::string(UPPZY_SOURCE_DIR) + "/scripts/pg-throwaway", "restart",
                       dir && *dir ? dir : UPPZY_TEST_PGDIR},
                      {}, &out);
  if (rc != 0) throw std::runtime_error("pg-throwaway restart failed: " + out);
}

int TerminateBackends(const std::string& url) {
  return static_cast<int>(QueryInt(url,
                                   "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()"));
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  char tmpl[] = "/tmp/uppzy-test-log-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  log_path_ = tmpl;
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      std::string key = kv.substr(0, kv.find('='));
      if (key.rfind("UPPZY_", 0) == 0 || key == "DATABASE_URL" || env.count(key)) continue;
      env_strings.push_back(kv);
    }
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp, args;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fd);
}

Process::~Process() {
  if (!reaped_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
  if (std::getenv("UPPZY_TEST_KEEP_LOGS") == nullptr) unlink(log_path_.c_str());
}

void Process::Signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

int Process::Wait(std::chrono::milliseconds timeout) {
  const bool exited = WaitFor(
      [&] {
        if (!reaped_ && waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
        return reaped_;
      },
      timeout, std::chrono::milliseconds(10));
  if (!exited) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

bool Process::Running() { return Wait(std::chrono::milliseconds(0)) == -1; }

std::string Process::Log() const { return ReadFile(log_path_); }

int RunCommand(std::vector<std::string> argv, std::map<std::string, std::string> env, std::string* output) {
  Process p(std::move(argv), std::move(env));
  int rc = p.Wait(std::chrono::milliseconds(60000));
  if (output) *output = p.Log();
  return rc;
}

int RunWorkerCli(const std::string& url, std::vector<std::string> args, std::string* output) {
  args.insert(args.begin(), UPPZY_WORKER_BIN);
  return RunCommand(std::move(args), {{"DATABASE_URL", url}}, output);
}

nlohmann::json RunWorkerCliJson(const std::string& url, std::vector<std::string> args, int expect_rc) {
  std::string out;
  const int rc = RunWorkerCli(url, std::move(args), &out);
  EXPECT_EQ(rc, expect_rc) << out;
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out;
  return j;
}

long HttpGet(const std::string& url, std::string* body) { return Http(url, nullptr, body); }
long HttpPost(const std::string& url, const std::string& payload, std::string* body) {
  return Http(url, &payload, body);
}

std::string HttpPortFromLog(const Process& p, std::chrono::milliseconds timeout) {
  std::string port;
  WaitFor(
      [&] {
        const std::string log = p.Log();
        const auto pos = log.find("http_port=");
        if (pos == std::string::npos) return false;
        port = log.substr(pos + 10, log.find_first_not_of("0123456789", pos + 10) - pos - 10);
        return !port.empty();
      },
      timeout);
  return port;
}

MockProcess::MockProcess(std::vector<std::string> extra_args, std::string api_key)
    : api_key_(std::move(api_key)) {
  char tmpl[] = "/tmp/uppzy-mock-port-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  unlink(tmpl);
  std::vector<std::string> argv = {UPPZY_MOCK_BIN, "--port", "0", "--port-file", tmpl, "--api-key", api_key_};
  for (auto& a : extra_args) argv.push_back(a);
  proc_ = std::make_unique<Process>(argv, std::map<std::string, std::string>{});
  const std::string port_file = tmpl;
  if (!WaitFor([&] { return !ReadFile(port_file).empty(); }, std::chrono::seconds(10))) {
    throw std::runtime_error("uppzy-mock did not start: " + proc_->Log());
  }
  port_ = std::stoi(ReadFile(port_file));
  unlink(port_file.c_str());
}

std::string MockProcess::root() const { return "http://127.0.0.1:" + std::to_string(port_); }
std::string MockProcess::base_url() const { return root() + "/api/v1"; }

nlohmann::json MockProcess::Stats() const {
  std::string body;
  if (HttpGet(root() + "/_mock/stats", &body) != 200) return nlohmann::json::object();
  return nlohmann::json::parse(body);
}

std::map<std::string, std::string> WorkerEnv(const std::string& db, const MockProcess& mock) {
  return {
      {"DATABASE_URL", db},
      {"UPPZY_BASE_URL", mock.base_url()},
      {"UPPZY_SITE_ID", "test-site"},
      {"UPPZY_API_KEY", mock.api_key()},
      {"UPPZY_POLL_INTERVAL_MS", "50"},
      {"UPPZY_POLL_TIMEOUT_MS", "5000"},
      {"UPPZY_BACKOFF_BASE_MS", "50"},
      {"UPPZY_BACKOFF_MAX_MS", "200"},
      {"UPPZY_FETCH_INTERVAL_MS", "100"},
      {"UPPZY_HTTP_TIMEOUT_MS", "3000"},
      {"UPPZY_LOG_LEVEL", "debug"},
      {"UPPZY_HTTP_ADDR", "127.0.0.1:0"},
  };
}

long PeakRssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace uppzy::test
