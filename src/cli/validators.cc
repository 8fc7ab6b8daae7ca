#include "cli/validators.h"

#include <charconv>
#include <cmath>
#include <type_traits>

#include "uppzy/config.h"
#include "uppzy/duration.h"
#include "uppzy/job.h"

namespace uppzy::cli {

CLI::Validator JobStateValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        return ParseJobState(s) ? ""
                                : "'" + s +
                                      "' is not a state (queued, submitting, polling, retrying, "
                                      "completed, failed, cancelled)";
      },
      "STATE");
}

CLI::Validator FinishedStateValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto st = ParseJobState(s);
        return st && IsTerminal(*st) ? ""
                                     : "'" + s + "' is not a finished state (completed, failed, cancelled)";
      },
      "STATE");
}

CLI::Validator ErrorKindValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto k = ParseErrorKind(s);
        return k && *k != ErrorKind::kNone ? ""
                                           : "'" + s +
                                                 "' is not an error_kind (rate_limited, server_error, "
                                                 "network, poll_timeout, upstream_failed, bad_request, "
                                                 "unauthorized, forbidden, invalid_response, "
                                                 "lease_expired, cancelled)";
      },
      "KIND");
}

CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        return ParseDuration(s) ? "" : "'" + s + "' is not a duration such as 90s, 30m, 1h or 7d";
      },
      "DURATION");
}

CLI::Validator SiteIdValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        return ValidSiteId(s)
                   ? ""
                   : "'" + s +
                         "' is not a site_id (1 to 128 letters, digits, '-', '_' or '.'; not '.' or '..')";
      },
      "SITE");
}

namespace {

// `text` as a T when all of it is one, else nullopt.
template <typename T>
std::optional<T> ParseWhole(std::string_view text) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

template <typename T>
std::optional<std::optional<T>> ParseOrNone(std::string_view text) {
  if (text == "none") return std::optional<std::optional<T>>(std::in_place);  // NULL
  auto value = ParseWhole<T>(text);
  if (!value) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(*value)) return std::nullopt;
  }
  return std::optional<T>(*value);
}

}  // namespace

std::optional<std::optional<int>> ParseIntOrNone(std::string_view text) { return ParseOrNone<int>(text); }

std::optional<std::optional<double>> ParseNumberOrNone(std::string_view text) {
  return ParseOrNone<double>(text);
}

CLI::Validator IntOrNoneValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        return ParseIntOrNone(s) ? "" : "'" + s + "' is not a whole number or none";
      },
      "N|none");
}

CLI::Validator NumberOrNoneValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        return ParseNumberOrNone(s) ? "" : "'" + s + "' is not a number or none";
      },
      "N|none");
}

}  // namespace uppzy::cli
