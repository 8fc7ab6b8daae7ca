// CLI11 validators shared by the operator commands, so every command spells states, error kinds and
// durations the same way. A value they refuse is a usage error (exit 2) naming the option.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace uppzy::cli {

// One of the seven job states.
CLI::Validator JobStateValidator();
// completed, failed or cancelled.
CLI::Validator FinishedStateValidator();
// One of the error_kind values (rate_limited ... cancelled).
CLI::Validator ErrorKindValidator();
// 90s, 30m, 1h, 7d (see uppzy/duration.h).
CLI::Validator DurationValidator();

}  // namespace uppzy::cli
