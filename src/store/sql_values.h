// Small conversions between C++ values and their SQL text forms, shared by every store class.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "uppzy/job.h"

namespace uppzy::store {

// libpqxx 6.4 passes an array parameter as its text form: "{1,2,3}".
inline std::string IdArray(const std::vector<int64_t>& ids) {
  std::string s = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "}";
}

// A nullable text column; NULL reads as "".
inline std::string Text(const pqxx::field& f) { return f.is_null() ? std::string() : f.as<std::string>(); }

// A nullable numeric column.
inline std::optional<double> Real(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<double>();
}

// Milliseconds since the epoch, as the writes' JSON carries times.
inline double Ms(TimePoint t) {
  return static_cast<double>(std::chrono::duration_cast<Millis>(t.time_since_epoch()).count());
}

// ISO 8601 UTC with milliseconds, e.g. "2026-11-25T18:00:00.123Z" (the `at` of an errors entry).
inline std::string Iso(TimePoint t) {
  const auto ms = std::chrono::duration_cast<Millis>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace uppzy::store
