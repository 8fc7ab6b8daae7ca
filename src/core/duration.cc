#include "uppzy/duration.h"

#include <charconv>

namespace uppzy {

std::optional<std::chrono::seconds> ParseDuration(std::string_view text, bool allow_zero) {
  if (text.size() < 2) return std::nullopt;
  long long unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return std::nullopt;
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  if (digits.empty() || digits.front() < '0' || digits.front() > '9') return std::nullopt;
  long long n = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
  constexpr long long kMaxSeconds = 36500LL * 86400;
  if (n > kMaxSeconds / unit) return std::nullopt;
  if (n == 0 && !allow_zero) return std::nullopt;
  return std::chrono::seconds(n * unit);
}

std::string FormatDuration(std::chrono::seconds d) {
  const long long s = d.count();
  if (s == 0) return "0s";
  if (s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

}  // namespace uppzy
