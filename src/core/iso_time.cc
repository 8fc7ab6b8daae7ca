#include "uppzy/iso_time.h"

#include <chrono>

namespace uppzy {
namespace {

// Reads exactly `n` digits at `*pos`.
bool Digits(std::string_view s, size_t* pos, size_t n, int* out) {
  if (*pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::optional<TimePoint> Parse(std::string_view s, bool date_alone) {
  using namespace std::chrono;
  size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!Digits(s, &pos, 4, &y) || !Expect(s, &pos, '-') || !Digits(s, &pos, 2, &mo) || !Expect(s, &pos, '-') ||
      !Digits(s, &pos, 2, &d)) {
    return std::nullopt;
  }
  if (y < 1970 || y > 2200) return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  if (pos == s.size()) {
    if (!date_alone) return std::nullopt;
    return time_point_cast<Clock::duration>(sys_days{ymd});
  }
  if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
  ++pos;
  if (!Digits(s, &pos, 2, &h) || !Expect(s, &pos, ':') || !Digits(s, &pos, 2, &mi)) return std::nullopt;
  long long frac_us = 0;
  if (Expect(s, &pos, ':')) {
    if (!Digits(s, &pos, 2, &sec)) return std::nullopt;
    if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
      ++pos;
      size_t n = 0;
      long long scale = 100000;
      for (; pos < s.size() && IsDigit(s[pos]); ++pos, ++n) {
        if (n < 6) {
          frac_us += (s[pos] - '0') * scale;
          scale /= 10;
        }
      }
      if (n == 0) return std::nullopt;
    }
  }
  if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
  int offset_min = 0;
  if (pos < s.size()) {
    const char c = s[pos];
    if (c == 'Z' || c == 'z') {
      ++pos;
    } else if (c == '+' || c == '-') {
      ++pos;
      int oh = 0, om = 0;
      if (!Digits(s, &pos, 2, &oh)) return std::nullopt;
      if (pos < s.size()) {
        Expect(s, &pos, ':');
        if (!Digits(s, &pos, 2, &om)) return std::nullopt;
      }
      if (oh > 23 || om > 59) return std::nullopt;
      offset_min = (c == '+' ? 1 : -1) * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  const auto t =
      sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + microseconds{frac_us} - minutes{offset_min};
  return time_point_cast<Clock::duration>(t);
}

}  // namespace

std::optional<TimePoint> ParseIsoTimestamp(std::string_view s) { return Parse(s, false); }

std::optional<TimePoint> ParseIsoDateOrTimestamp(std::string_view s) { return Parse(s, true); }

}  // namespace uppzy
