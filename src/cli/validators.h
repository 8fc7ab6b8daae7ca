// CLI11 validators shared by the operator commands, so every command spells states, error kinds and
// durations the same way. A value they refuse is a usage error (exit 2) naming the option.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace uppzy::cli {

// One of the seven job states.
CLI::Validator JobStateValidator();
// completed, failed or cancelled.
CLI::Validator FinishedStateValidator();
// One of the error_kind values (rate_limited ... cancelled).
CLI::Validator ErrorKindValidator();
// 90s, 30m, 1h, 7d (see uppzy/duration.h).
CLI::Validator DurationValidator();
// A site_id by the rule of UPPZY_SITE_ID (ValidSiteId in uppzy/config.h).
CLI::Validator SiteIdValidator();

// A setting given as a number or `none` (NULL). The outer nullopt: neither (a usage error); an empty
// inner optional: none. Ranges are the database's to check (its named constraints), not these.
// A whole number that fits an int: "12", "-3".
std::optional<std::optional<int>> ParseIntOrNone(std::string_view text);
// A finite decimal number: "12", "0.5", "-1".
std::optional<std::optional<double>> ParseNumberOrNone(std::string_view text);
CLI::Validator IntOrNoneValidator();
CLI::Validator NumberOrNoneValidator();

}  // namespace uppzy::cli
