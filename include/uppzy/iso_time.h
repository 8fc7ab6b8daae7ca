// ISO 8601 / RFC 3339 times, read one way everywhere: Uppzy's timestamps (delivery_policy.cc) and the
// dashboard's since/until (src/dashboard/params.cc). Pure; never throws.
//
// Accepted: a date, `T` (or `t`, or a space), a time, an optional zone:
//   date   YYYY-MM-DD, a real calendar day in the years 1970 to 2200
//   time   HH:MM, HH:MM:SS (second 60 allowed, for a leap second) or HH:MM:SS.f / HH:MM:SS,f with 1 or
//          more digits (those past the sixth are dropped)
//   zone   Z or z, +HH, +HH:MM or +HHMM (or -); none means UTC
// e.g. "2025-03-01T12:00:00Z", "2025-03-01T12:00:00.123Z", "2025-03-01 12:00:00+02:00", "...+0200",
// "2025-03-01T12:00". Anything else is nullopt, and so are years before 1970 or after 2200 on purpose:
// TimePoint holds nanoseconds since 1970 and would wrap (year 0 came back as 1753), and no Uppzy reply
// or operator means such a time.
#pragma once

#include <optional>
#include <string_view>

#include "uppzy/job.h"

namespace uppzy {

// A date and time as above; a date alone is refused.
std::optional<TimePoint> ParseIsoTimestamp(std::string_view s);
// The same, and also a date alone ("2024-05-01"), which means midnight UTC of that day.
std::optional<TimePoint> ParseIsoDateOrTimestamp(std::string_view s);

}  // namespace uppzy
