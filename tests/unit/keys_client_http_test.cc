// UppzyClient with a KeyRing of two sites against the in-process mock (`--site A=… --site B=…`) over
// real HTTP on 127.0.0.1: each request carries its own site's key, a rotated key is used from the next
// request on, and a site without a key ends at once without a request.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mock/mock_server.h"
#include "support/temp_dir.h"
#include "uppzy/key_ring.h"
#include "uppzy/uppzy_client.h"

namespace uppzy {
namespace {

using test::TempDir;
constexpr auto Write = &TempDir::Write;

class KeysClientHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Write(dir_ / "A", "key-aaaa\n");
    Write(dir_ / "B", "key-bbbb-old\n");  // not what the mock expects yet
    KeySources sources;
    sources.default_site = "A";
    sources.keys_dir = dir_.path().string();
    KeyRingResult loaded = KeyRing::Load(sources);
    ASSERT_TRUE(loaded.ring) << loaded.problems.front();
    ring_ = std::move(loaded.ring);

    mock_ = std::make_unique<mock::MockServer>(
        mock::MockOptions{.sites = {{"A", "key-aaaa"}, {"B", "key-bbbb"}}, .ready_after_ms = 0, .seed = 7});
    mock_->Start();
    UpstreamConfig config;
    config.base_url = "http://127.0.0.1:" + std::to_string(mock_->port()) + "/api/v1";
    config.key_lookup = [ring = ring_.get()](const std::string& site) -> std::optional<std::string> {
      std::optional<Key> key = ring->Get(site);
      if (!key) return std::nullopt;
      return key->key;
    };
    config.max_connections = 2;
    client_ = std::make_unique<UppzyClient>(config);
  }

  // Submits one message for `site` and returns its outcome.
  Outcome Submit(const std::string& site) {
    ++tag_;
    client_->StartSubmit(tag_, site, static_cast<int64_t>(tag_), 1, "session", "hello", "en");
    return Wait();
  }
  Outcome Status(const std::string& site, const std::string& request_id) {
    client_->StartStatus(++tag_, site, request_id);
    return Wait();
  }
  Outcome Wait() {
    std::vector<Completion> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (out.empty() && std::chrono::steady_clock::now() < deadline) client_->Perform(50, &out);
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? Outcome{} : out.front().outcome;
  }
  nlohmann::json SiteStats(const std::string& site) const {
    return nlohmann::json::parse(mock_->StatsJson())["sites"][site];
  }

  TempDir dir_{"uppzy-keys-http"};
  std::unique_ptr<KeyRing> ring_;
  std::unique_ptr<mock::MockServer> mock_;
  std::unique_ptr<UppzyClient> client_;
  uint64_t tag_ = 0;
};

TEST_F(KeysClientHttpTest, EachRequestCarriesItsSitesKeyAndARotatedKeyServesTheNextRequest) {
  Outcome a = Submit("A");
  ASSERT_EQ(a.kind, OutcomeKind::kAccepted) << Describe(a);
  EXPECT_EQ(Status("A", a.request_id).kind, OutcomeKind::kStatus);

  Outcome b = Submit("B");
  EXPECT_EQ(b.kind, OutcomeKind::kUnauthorized) << "B's file holds a key the mock does not take";
  EXPECT_EQ(b.http_status, 401);
  EXPECT_EQ(SiteStats("A")["unauthorized"], 0) << "A's requests never carried B's key";

  Write(dir_ / "B", "key-bbbb\n");
  ASSERT_TRUE(ring_->CheckForChanges());
  b = Submit("B");
  ASSERT_EQ(b.kind, OutcomeKind::kAccepted) << Describe(b);
  EXPECT_EQ(Status("B", b.request_id).kind, OutcomeKind::kStatus);
  EXPECT_EQ(Submit("A").kind, OutcomeKind::kAccepted) << "A is untouched by B's rotation";

  EXPECT_EQ(SiteStats("A")["requests"], 3);
  EXPECT_EQ(SiteStats("A")["unauthorized"], 0);
  EXPECT_EQ(SiteStats("B")["requests"], 2);
  EXPECT_EQ(SiteStats("B")["unauthorized"], 1);
}

TEST_F(KeysClientHttpTest, ASiteWithoutAKeyEndsAtOnceWithoutARequest) {
  Outcome c = Submit("C");
  EXPECT_EQ(c.kind, OutcomeKind::kUnauthorized);
  EXPECT_EQ(c.http_status, 0) << "nothing was sent";
  EXPECT_NE(c.error.find("no API key for site 'C'"), std::string::npos) << c.error;
  client_->StartFeedback(++tag_, "C", "session", "req", "positive");
  EXPECT_EQ(Wait().kind, OutcomeKind::kUnauthorized);
  EXPECT_EQ(nlohmann::json::parse(mock_->StatsJson())["requests_total"], 0);
}

}  // namespace
}  // namespace uppzy
