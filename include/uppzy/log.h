// Structured logging over spdlog: text (`event key=value ...`) or JSON lines (UPPZY_LOG_FORMAT=json).
//
// Every line about a job carries job_id, attempt, state, error_kind, request_id, http_status and
// duration_ms. Callers never pass message or answer text, nor the API key: the fields here are the
// only things that reach the log. Thread-safe (spdlog's default logger is).
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "uppzy/job.h"

namespace uppzy {

// Every later line replaces `secret` (the API key; ignored when shorter than 8 bytes) with
// "[redacted]" in its values. Call once at start-up, before other threads log: not thread-safe.
void SetLogRedaction(const std::string& secret);

// Text lines escape control bytes in values (\n, \r, \t, \xNN), so a vendor's NUL or CR cannot
// forge or hide a line; JSON lines escape them as JSON does.
// Sets the default logger's level ("trace".."error") and format ("text" or "json"), writing to stderr.
void InitLogging(const std::string& level, const std::string& format);

struct JobLogFields {
  int64_t job_id = 0;
  int attempt = 0;
  JobState state = JobState::kQueued;
  ErrorKind error_kind = ErrorKind::kNone;
  std::string_view request_id;
  int http_status = 0;
  long long duration_ms = -1;  // -1: not applicable
};

void LogJob(spdlog::level::level_enum level, std::string_view event, const JobLogFields& f,
            std::string_view detail = {});

// A line that is not about one job: `fields` are extra key/value pairs (values already safe to log).
void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<std::pair<std::string_view, std::string>> fields = {});

}  // namespace uppzy
