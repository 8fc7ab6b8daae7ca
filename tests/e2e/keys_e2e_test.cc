// End to end: `uppzy-worker run` with UPPZY_API_KEYS_DIR laid out as a Kubernetes secret volume (issue
// 10): its only site is the default, a swapped key is seen without a signal, SIGHUP re-reads the keys
// without stopping the worker, and no key reaches the log.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <string>

#include "support/temp_dir.h"
#include "support/wait_for.h"
#include "support/worker_fixture.h"
#include "uppzy/config.h"

namespace uppzy {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class KeysE2E : public test::WorkerFixture {
 protected:
  // Publishes `key` for test-site the way the kubelet updates a secret: a new timestamped directory,
  // then `..data` renamed to point at it in one step.
  void Publish(const std::string& key) {
    const std::string version = "..v" + std::to_string(++version_);
    fs::create_directory(dir_ / version);
    test::TempDir::Write(dir_ / version / "test-site", key + "\n");
    fs::create_directory_symlink(version, dir_ / "..data_tmp");
    fs::rename(dir_ / "..data_tmp", dir_ / "..data");
    if (!fs::exists(dir_ / "test-site")) fs::create_symlink("..data/test-site", dir_ / "test-site");
  }
  std::unique_ptr<test::Process> StartWithDir() {
    return StartWorker(
        {{"UPPZY_API_KEY", ""}, {"UPPZY_SITE_ID", ""}, {"UPPZY_API_KEYS_DIR", dir_.path().string()}});
  }

  test::TempDir dir_{"uppzy-e2e-keys"};
  int version_ = 0;
};

TEST_F(KeysE2E, AKeysDirectoryServesItsOnlySiteAndIsReReadOnChangeAndOnSighup) {
  Publish(key_);
  auto worker = StartWithDir();
  auto first = Enqueue("first");
  ASSERT_TRUE(WaitState(first, "completed")) << worker->Log();
  EXPECT_NE(worker->Log().find("site_id=test-site"), std::string::npos) << worker->Log();
  EXPECT_NE(worker->Log().find("api_key_fingerprint=" + KeyFingerprint(key_)), std::string::npos);

  // A swapped secret is seen without a signal (checked every second).
  const std::string next = "test-key-NEXT-77aa";
  Publish(next);
  ASSERT_TRUE(test::WaitFor(
      [&] { return worker->Log().find("new_fingerprint=" + KeyFingerprint(next)) != std::string::npos; },
      10s))
      << worker->Log();
  EXPECT_NE(worker->Log().find("trigger=file_change"), std::string::npos);

  // SIGHUP re-reads at once and does not stop the worker.
  Publish(key_);
  worker->Signal(SIGHUP);
  ASSERT_TRUE(test::WaitFor(
      [&] { return worker->Log().find("new_fingerprint=" + KeyFingerprint(key_)) != std::string::npos; },
      10s))
      << worker->Log();
  EXPECT_NE(worker->Log().find("key_reload_requested"), std::string::npos);
  EXPECT_TRUE(worker->Running());
  auto second = Enqueue("second");
  ASSERT_TRUE(WaitState(second, "completed")) << worker->Log();

  worker->Signal(SIGTERM);
  EXPECT_EQ(worker->Wait(20s), 0);
  const std::string log = worker->Log();
  EXPECT_EQ(log.find(key_), std::string::npos) << "no key in any log line";
  EXPECT_EQ(log.find(next), std::string::npos) << "no key in any log line";
}

TEST_F(KeysE2E, ABadKeysDirectoryStopsTheWorkerAtStartUpNamingTheSetting) {
  test::TempDir::Write(dir_ / "bad site", key_);
  auto worker = StartWithDir();
  EXPECT_NE(worker->Wait(20s), 0);
  EXPECT_NE(worker->Log().find("UPPZY_API_KEYS_DIR: '" + (dir_ / "bad site").string() + "'"),
            std::string::npos)
      << worker->Log();
}

}  // namespace
}  // namespace uppzy
