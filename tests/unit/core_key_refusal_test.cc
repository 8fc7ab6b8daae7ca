// DecideKeyRefusal: a refused key is retried once with the site's new key, else it is an incident.
#include <gtest/gtest.h>

#include "uppzy/key_refusal.h"

namespace uppzy {
namespace {

struct Case {
  const char* name;
  const char* sent;
  const char* current;
  bool already_retried;
  KeyRefusalAction want;
};

TEST(DecideKeyRefusal, Table) {
  using enum KeyRefusalAction;
  const Case cases[] = {
      {"key rotated since the request was sent", "aaaaaaaaaaaa", "bbbbbbbbbbbb", false, kRetryWithNewKey},
      {"same key after the re-read", "aaaaaaaaaaaa", "aaaaaaaaaaaa", false, kIncident},
      {"site lost its key", "aaaaaaaaaaaa", "", false, kIncident},
      {"no key when sent, one now", "", "bbbbbbbbbbbb", false, kRetryWithNewKey},
      {"no key when sent, none now", "", "", false, kIncident},
      {"rotated again after one retry", "bbbbbbbbbbbb", "cccccccccccc", true, kIncident},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(DecideKeyRefusal(c.sent, c.current, c.already_retried), c.want) << c.name;
  }
}

}  // namespace
}  // namespace uppzy
