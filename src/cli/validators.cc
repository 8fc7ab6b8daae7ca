#include "cli/validators.h"

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

}  // namespace uppzy::cli
