// KeyRing on real files in a temporary directory: loading, refusals that name the setting and the file,
// reloads (a rotated key, a half-written file, sites added and removed) and change detection, including
// the way Kubernetes swaps a secret volume (a new timestamped directory, then a rename of `..data`).
#include "uppzy/key_ring.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace uppzy {
namespace {

namespace fs = std::filesystem;

using test::TempDir;
constexpr auto Write = &TempDir::Write;

std::string All(const std::vector<std::string>& problems) {
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  return all;
}

class KeyRingTest : public ::testing::Test {
 protected:
  void SetUp() override { fs::create_directory(dir_); }

  KeySources Dir(std::string default_site = "A") const {
    KeySources s;
    s.default_site = std::move(default_site);
    s.keys_dir = dir_.string();
    return s;
  }

  std::unique_ptr<KeyRing> MustLoad(const KeySources& s) {
    KeyRingResult r = KeyRing::Load(s);
    EXPECT_TRUE(r.problems.empty()) << All(r.problems);
    return std::move(r.ring);
  }

  // Every problem of loading `s`, which must fail.
  std::string Refused(const KeySources& s) {
    KeyRingResult r = KeyRing::Load(s);
    EXPECT_EQ(r.ring, nullptr);
    EXPECT_FALSE(r.problems.empty());
    return All(r.problems);
  }

  TempDir tmp_{"uppzy-keys"};
  const fs::path root_ = tmp_.path();
  const fs::path dir_ = root_ / "keys";
};

TEST_F(KeyRingTest, LoadsADirectoryOfTwoSitesAndIgnoresDotFiles) {
  Write(dir_ / "A", "key-aaaa\n");
  Write(dir_ / "B", "  key-bbbbbb \r\n");
  Write(dir_ / ".hidden file!", "");
  fs::create_directory(dir_ / ".cache");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->Sites(), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(ring->DefaultSite(), "A");
  EXPECT_EQ(ring->Generation(), 1u);
  ASSERT_TRUE(ring->Get("A"));
  EXPECT_EQ(ring->Get("A")->key, "key-aaaa");
  EXPECT_EQ(ring->Get("A")->fingerprint, KeyFingerprint("key-aaaa"));
  EXPECT_EQ(ring->Get("B")->key, "key-bbbbbb");
  EXPECT_FALSE(ring->Get("C"));
}

TEST_F(KeyRingTest, ADirectoryWithOneSiteMakesItTheDefaultWithoutUppzySiteId) {
  Write(dir_ / "only-site", "key-only\n");
  auto ring = MustLoad(Dir(""));
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->DefaultSite(), "only-site");
}

TEST_F(KeyRingTest, TheSingleSiteFormAndADirectoryOfOtherSitesWorkTogether) {
  Write(dir_ / "B", "key-bbbb");
  KeySources s = Dir("A");
  s.env_key = "key-from-env";
  auto ring = MustLoad(s);
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->Get("A")->key, "key-from-env");
  EXPECT_EQ(ring->Get("B")->key, "key-bbbb");
}

TEST_F(KeyRingTest, EachBadDirectoryIsRefusedNamingTheSettingAndThePath) {
  KeySources s = Dir();
  s.keys_dir = (root_ / "missing").string();
  EXPECT_NE(Refused(s).find("UPPZY_API_KEYS_DIR: '" + s.keys_dir + "' does not exist"), std::string::npos);
  Write(root_ / "plain", "x");
  s.keys_dir = (root_ / "plain").string();
  EXPECT_NE(Refused(s).find("UPPZY_API_KEYS_DIR: '" + s.keys_dir + "' is not a directory"),
            std::string::npos);
  Write(dir_ / ".only-hidden", "key-hidden");
  EXPECT_NE(Refused(Dir()).find("UPPZY_API_KEYS_DIR: '" + dir_.string() + "' holds no key file"),
            std::string::npos);
  if (geteuid() != 0) {  // root reads any directory
    Write(dir_ / "A", "key-aaaa");
    fs::permissions(dir_, fs::perms::none);
    EXPECT_NE(Refused(Dir()).find("UPPZY_API_KEYS_DIR: cannot read '" + dir_.string() + "'"),
              std::string::npos);
    fs::permissions(dir_, fs::perms::owner_all);
  }
}

TEST_F(KeyRingTest, EachBadKeyFileIsRefusedNamingTheSettingAndTheFile) {
  struct Case {
    std::string name;
    std::string content;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"bad name!", "key-xxxx", "the file name must be a site_id"},
      {"B", "", "is empty"},
      {"B", " \n\n", "is empty"},
      {"B", std::string(kMaxKeyFileBytes + 1, 'k'), "is larger than 4096 bytes"},
      {"B", "key\rsecretword", "control character"},
      {"B", std::string("key\0secretword", 14), "control character"},
      {"B", "key\nsecretword", "control character"},
  };
  for (const Case& c : cases) {
    fs::remove_all(dir_);
    fs::create_directory(dir_);
    Write(dir_ / "A", "key-aaaa");
    Write(dir_ / c.name, c.content);
    const std::string all = Refused(Dir());
    EXPECT_NE(all.find("UPPZY_API_KEYS_DIR: '" + (dir_ / c.name).string() + "'"), std::string::npos) << all;
    EXPECT_NE(all.find(c.why), std::string::npos) << c.name << ": " << all;
    EXPECT_EQ(all.find("secretword"), std::string::npos) << "the key text is never echoed: " << all;
  }
  fs::remove(dir_ / "B");
  fs::create_directory(dir_ / "B");
  EXPECT_NE(Refused(Dir()).find("'" + (dir_ / "B").string() + "' is not a regular file"), std::string::npos);
}

TEST_F(KeyRingTest, WhichSiteIsTheDefaultMustBeClearAndItMustHaveAKey) {
  Write(dir_ / "A", "key-aaaa");
  Write(dir_ / "B", "key-bbbb");
  EXPECT_NE(Refused(Dir("")).find("UPPZY_SITE_ID is required: UPPZY_API_KEYS_DIR"), std::string::npos);
  const std::string none = Refused(Dir("C"));
  EXPECT_NE(none.find("UPPZY_SITE_ID 'C' has no key"), std::string::npos) << none;
  EXPECT_NE(Refused(Dir("bad site!")).find("UPPZY_SITE_ID must be"), std::string::npos);
  EXPECT_NE(Refused(KeySources{}).find("one of UPPZY_API_KEY, UPPZY_API_KEY_FILE or UPPZY_API_KEYS_DIR"),
            std::string::npos);
}

TEST_F(KeyRingTest, AKeyFromTheEnvironmentAndAFileForTheSameSiteIsRefusedNamingBoth) {
  Write(dir_ / "A", "key-aaaa");
  KeySources s = Dir("A");
  s.env_key = "key-from-env";
  const std::string all = Refused(s);
  EXPECT_NE(all.find("UPPZY_API_KEYS_DIR: '" + (dir_ / "A").string() + "'"), std::string::npos) << all;
  EXPECT_NE(all.find("UPPZY_API_KEY keys too"), std::string::npos) << all;
  s.env_key.clear();
  s.key_file = (root_ / "key").string();
  Write(s.key_file, "key-from-file");
  EXPECT_NE(Refused(s).find("UPPZY_API_KEY_FILE keys too"), std::string::npos);
}

TEST_F(KeyRingTest, ReloadPicksUpARotatedKeyAndBumpsTheGeneration) {
  Write(dir_ / "A", "key-aaaa");
  Write(dir_ / "B", "key-bbbb");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  KeyReload same = ring->Reload();
  EXPECT_TRUE(same.changes.empty());
  EXPECT_TRUE(same.problems.empty()) << All(same.problems);
  EXPECT_EQ(ring->Generation(), 1u) << "nothing changed";

  Write(dir_ / "B", "key-bbbb-rotated\n");
  KeyReload r = ring->Reload();
  EXPECT_TRUE(r.problems.empty()) << All(r.problems);
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].kind, KeyChange::Kind::kChanged);
  EXPECT_EQ(r.changes[0].site_id, "B");
  EXPECT_EQ(r.changes[0].old_fingerprint, KeyFingerprint("key-bbbb"));
  EXPECT_EQ(r.changes[0].new_fingerprint, KeyFingerprint("key-bbbb-rotated"));
  EXPECT_EQ(r.generation, 2u);
  EXPECT_EQ(ring->Generation(), 2u);
  EXPECT_EQ(ring->Get("B")->key, "key-bbbb-rotated");
  EXPECT_EQ(ring->Get("A")->key, "key-aaaa");
}

TEST_F(KeyRingTest, ReloadAddsAndRemovesSitesButNeverTheDefault) {
  Write(dir_ / "A", "key-aaaa");
  Write(dir_ / "B", "key-bbbb");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  fs::remove(dir_ / "B");
  Write(dir_ / "C", "key-cccc");
  KeyReload r = ring->Reload();
  EXPECT_TRUE(r.problems.empty()) << All(r.problems);
  EXPECT_EQ(ring->Sites(), (std::vector<std::string>{"A", "C"}));
  ASSERT_EQ(r.changes.size(), 2u);
  EXPECT_EQ(r.changes[0].kind, KeyChange::Kind::kAdded);
  EXPECT_EQ(r.changes[0].site_id, "C");
  EXPECT_EQ(r.changes[1].kind, KeyChange::Kind::kRemoved);
  EXPECT_EQ(r.changes[1].site_id, "B");

  fs::remove(dir_ / "A");
  r = ring->Reload();
  EXPECT_TRUE(r.changes.empty());
  EXPECT_NE(All(r.problems).find("default site"), std::string::npos) << All(r.problems);
  EXPECT_EQ(ring->Get("A")->key, "key-aaaa") << "the default site keeps its key";
}

TEST_F(KeyRingTest, AHalfWrittenOrEmptyFileKeepsThePreviousKeyAndSaysSo) {
  Write(dir_ / "A", "key-aaaa");
  Write(dir_ / "B", "key-bbbb");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  for (const std::string& broken : {std::string(""), std::string("key-b\nbb"), std::string(5000, 'k')}) {
    Write(dir_ / "B", broken);
    KeyReload r = ring->Reload();
    EXPECT_TRUE(r.changes.empty());
    const std::string all = All(r.problems);
    EXPECT_NE(all.find("UPPZY_API_KEYS_DIR: '" + (dir_ / "B").string() + "'"), std::string::npos) << all;
    EXPECT_NE(all.find("kept the previous key of site 'B' (fingerprint " + KeyFingerprint("key-bbbb") + ")"),
              std::string::npos)
        << all;
    EXPECT_EQ(ring->Get("B")->key, "key-bbbb");
    EXPECT_EQ(ring->Generation(), 1u);
  }
  fs::remove_all(dir_);
  KeyReload gone = ring->Reload();
  EXPECT_NE(All(gone.problems).find("does not exist"), std::string::npos);
  EXPECT_EQ(ring->Sites(), (std::vector<std::string>{"A", "B"})) << "a missing directory drops no key";

  fs::create_directory(dir_);
  Write(dir_ / "A", "key-aaaa");
  Write(dir_ / "B", "key-bbbb-new");
  KeyReload fixed = ring->Reload();
  EXPECT_TRUE(fixed.problems.empty()) << All(fixed.problems);
  EXPECT_EQ(ring->Get("B")->key, "key-bbbb-new");
}

TEST_F(KeyRingTest, TheKeyFileOfTheSingleSiteFormIsReReadAndKeptWhenBroken) {
  KeySources s;
  s.default_site = "A";
  s.key_file = (root_ / "key").string();
  Write(s.key_file, "key-one\n");
  auto ring = MustLoad(s);
  ASSERT_NE(ring, nullptr);
  Write(s.key_file, "");
  KeyReload broken = ring->Reload();
  EXPECT_NE(All(broken.problems).find("UPPZY_API_KEY_FILE: '" + s.key_file + "' is empty"),
            std::string::npos);
  EXPECT_EQ(ring->Get("A")->key, "key-one");
  Write(s.key_file, "key-two\n");
  std::optional<KeyReload> changed = ring->CheckForChanges();
  ASSERT_TRUE(changed);
  EXPECT_EQ(ring->Get("A")->key, "key-two");
}

TEST_F(KeyRingTest, CheckForChangesIsQuietUntilAFileMoves) {
  Write(dir_ / "A", "key-aaaa");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  EXPECT_FALSE(ring->CheckForChanges());
  EXPECT_FALSE(ring->CheckForChanges());
  Write(dir_ / "A", "key-aaaa-2");
  std::optional<KeyReload> r = ring->CheckForChanges();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->changes.size(), 1u);
  EXPECT_FALSE(ring->CheckForChanges()) << "seen once";
  Write(dir_ / "B", "key-bbbb");
  r = ring->CheckForChanges();
  ASSERT_TRUE(r);
  EXPECT_EQ(ring->Get("B")->key, "key-bbbb");
}

// A Kubernetes secret volume: the keys live in a timestamped directory; `..data` links to it and each
// site's name links through `..data`. An update writes a new timestamped directory, points a new link
// at it and renames that link over `..data` (one atomic step), then deletes the old directory.
TEST_F(KeyRingTest, FollowsAKubernetesSecretVolumeAndSeesItsAtomicSwap) {
  fs::create_directory(dir_ / "..2024_01_01_00_00_00.1");
  Write(dir_ / "..2024_01_01_00_00_00.1" / "A", "key-aaaa");
  Write(dir_ / "..2024_01_01_00_00_00.1" / "B", "key-bbbb");
  fs::create_directory_symlink("..2024_01_01_00_00_00.1", dir_ / "..data");
  fs::create_symlink("..data/A", dir_ / "A");
  fs::create_symlink("..data/B", dir_ / "B");
  auto ring = MustLoad(Dir());
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->Sites(), (std::vector<std::string>{"A", "B"}));
  EXPECT_FALSE(ring->CheckForChanges());

  fs::create_directory(dir_ / "..2024_01_02_00_00_00.2");
  Write(dir_ / "..2024_01_02_00_00_00.2" / "A", "key-aaaa");
  Write(dir_ / "..2024_01_02_00_00_00.2" / "B", "key-bbbb-rotated");
  fs::create_directory_symlink("..2024_01_02_00_00_00.2", dir_ / "..data_tmp");
  fs::rename(dir_ / "..data_tmp", dir_ / "..data");
  fs::remove_all(dir_ / "..2024_01_01_00_00_00.1");

  std::optional<KeyReload> r = ring->CheckForChanges();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->problems.empty()) << All(r->problems);
  ASSERT_EQ(r->changes.size(), 1u);
  EXPECT_EQ(r->changes[0].site_id, "B");
  EXPECT_EQ(ring->Get("B")->key, "key-bbbb-rotated");
  EXPECT_EQ(ring->Generation(), 2u);
}

}  // namespace
}  // namespace uppzy
