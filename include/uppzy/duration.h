// Human durations for operator commands and retention settings: "90s", "30m", "1h", "7d".
//
// Pure; never throws. Shared by the CLI (--since, --older-than) and the configuration
// (UPPZY_RETAIN_*), so both accept exactly the same spellings.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace uppzy {

// A positive whole number followed by one unit: s (seconds), m (minutes), h (hours), d (days), e.g.
// "90s", "30m", "1h", "7d". No spaces, no sign, no fractions; at most 36500 days. Returns nullopt for
// anything else (including "0s" when `allow_zero` is false, and a bare number without a unit).
std::optional<std::chrono::seconds> ParseDuration(std::string_view text, bool allow_zero = false);

// The shortest exact spelling of `d` in the units above ("7d", "90m", "45s"); "0s" for zero.
std::string FormatDuration(std::chrono::seconds d);

}  // namespace uppzy
