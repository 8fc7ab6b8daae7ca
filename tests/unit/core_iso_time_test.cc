// The one ISO 8601 reader (include/uppzy/iso_time.h): Uppzy's timestamps and the dashboard's
// since/until. One row per edge; `date_alone` is what ParseIsoDateOrTimestamp adds.
#include "uppzy/iso_time.h"

#include <gtest/gtest.h>

#include <chrono>

namespace uppzy {
namespace {

constexpr long long kRefused = -1;

struct IsoCase {
  const char* text;
  long long unix_ms;     // ParseIsoTimestamp; kRefused: nullopt
  long long date_alone;  // ParseIsoDateOrTimestamp
};

class IsoTable : public ::testing::TestWithParam<IsoCase> {};

long long Ms(const std::optional<TimePoint>& t) {
  return t ? std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count() : kRefused;
}

TEST_P(IsoTable, Parses) {
  const IsoCase& c = GetParam();
  EXPECT_EQ(Ms(ParseIsoTimestamp(c.text)), c.unix_ms) << c.text;
  EXPECT_EQ(Ms(ParseIsoDateOrTimestamp(c.text)), c.date_alone) << c.text;
}

const IsoCase kIsoCases[] = {
    {"2025-03-01T12:00:00Z", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T12:00:00.123Z", 1740830400123LL, 1740830400123LL},
    {"2025-03-01T12:00:00.123456789Z", 1740830400123LL, 1740830400123LL},
    {"2025-03-01T12:00:00,5z", 1740830400500LL, 1740830400500LL},
    {"2025-03-01 12:00:00", 1740830400000LL, 1740830400000LL},
    {"2025-03-01t12:00:00", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T12:00", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T12:00Z", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T14:00:00+02:00", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T14:00:00+02", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T07:00:00-0500", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T11:30:00-00:30", 1740830400000LL, 1740830400000LL},
    {"2025-03-01T11:59:60Z", 1740830400000LL, 1740830400000LL},
    {"1970-01-01T00:00:00Z", 0, 0},
    {"2024-02-29T00:00:00Z", 1709164800000LL, 1709164800000LL},
    {"2200-12-31T23:59:59Z", 7289654399000LL, 7289654399000LL},
    // A date alone: midnight UTC, only when asked for.
    {"2025-03-01", kRefused, 1740787200000LL},
    {"1970-01-01", kRefused, 0},
    {"2024-02-29", kRefused, 1709164800000LL},
    {"2025-02-29", kRefused, kRefused},
    {"2024-04-31", kRefused, kRefused},
    {"2024-13-01", kRefused, kRefused},
    {"2024-5-1", kRefused, kRefused},
    {"1969-12-31", kRefused, kRefused},
    {"2201-01-01", kRefused, kRefused},
    {"0000-01-01T00:00:00Z", kRefused, kRefused},
    {"2201-01-01T00:00:00Z", kRefused, kRefused},
    {"2025-02-29T00:00:00Z", kRefused, kRefused},
    {"2025-03-01T25:00:00Z", kRefused, kRefused},
    {"2025-03-01T24:00:00Z", kRefused, kRefused},
    {"2025-03-01T12:60Z", kRefused, kRefused},
    {"2025-03-01T12:00:61Z", kRefused, kRefused},
    {"2025-03-01T12:00.5Z", kRefused, kRefused},
    {"2025-03-01T12:00:00.Z", kRefused, kRefused},
    {"2025-03-01T12:00:00+2", kRefused, kRefused},
    {"2025-03-01T12:00:00+02:", kRefused, kRefused},
    {"2025-03-01T12:00:00+24:00", kRefused, kRefused},
    {"2025-03-01T12:00:00Zjunk", kRefused, kRefused},
    {"2025-03-01T", kRefused, kRefused},
    {"2025-03-01X12:00:00", kRefused, kRefused},
    {"２０２５-03-01", kRefused, kRefused},
    {"", kRefused, kRefused},
    {"not a date", kRefused, kRefused},
};

INSTANTIATE_TEST_SUITE_P(Table, IsoTable, ::testing::ValuesIn(kIsoCases));

}  // namespace
}  // namespace uppzy
