// Small conversions between C++ values and their SQL text forms, shared by every store class.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

#include "uppzy/job.h"
#include "uppzy/store_error.h"
#include "uppzy/worker_store.h"

namespace uppzy::store {

// libpqxx 6.4 passes an array parameter as its text form: "{1,2,3}".
template <typename Int>
std::string IntArray(const std::vector<Int>& values) {
  std::string s = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(values[i]);
  }
  return s + "}";
}
inline std::string IdArray(const std::vector<int64_t>& ids) { return IntArray(ids); }

// A text[] parameter's text form: every element double-quoted, with '"' and '\' escaped by a
// backslash, so any text (empty, with commas, braces, quotes or the word NULL) is one element.
inline std::string TextArray(const std::vector<std::string>& values) {
  std::string s = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  return s + "}";
}

// One column of a batch, as a typed array parameter's text form ("{1,NULL,3}", "{\"a b\",NULL}"). The
// batched writes pass one array per column and unnest them: PostgreSQL parses no JSON, and the planner
// knows the batch's size (an unnest of a parameter is estimated at the array's length). Not
// thread-safe; one builder per column. Text() throws StoreError (not transient) for a NUL character,
// which no PostgreSQL text can hold and which would cut the parameter short (libpq sends C strings).
class ArrayColumn {
 public:
  void Null() {
    Sep();
    s_ += "NULL";
  }
  void Int(long long v) {
    Sep();
    s_ += std::to_string(v);
  }
  void Bool(bool v) {
    Sep();
    s_ += v ? 't' : 'f';
  }
  void Text(std::string_view v) {
    if (v.find('\0') != std::string_view::npos) {
      throw StoreError("a value to store contains a NUL character, which PostgreSQL text cannot hold", false);
    }
    Sep();
    s_ += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') s_ += '\\';
      s_ += c;
    }
    s_ += '"';
  }
  // Optional values: NULL when absent.
  void OptInt(const std::optional<int>& v) { v ? Int(*v) : Null(); }
  void OptText(const std::optional<std::string>& v) { v ? Text(*v) : Null(); }
  // Milliseconds since the epoch, as a whole number (the statements divide by 1,000).
  void Ms(const std::optional<TimePoint>& t) {
    t ? Int(static_cast<long long>(std::chrono::duration_cast<Millis>(t->time_since_epoch()).count()))
      : Null();
  }
  // The array's text form; the builder is empty afterwards.
  std::string Take() {
    s_ += '}';
    std::string out = std::move(s_);
    s_ = "{";
    n_ = 0;
    return out;
  }

 private:
  void Sep() {
    if (n_++ > 0) s_ += ',';
  }
  std::string s_ = "{";
  size_t n_ = 0;
};

// A ClaimScope as the claim statements' parameters: sites (text[]) and their limits (int[]), one
// entry per site, in the order first listed; a site listed twice gets the sum of its limits.
struct ScopeArrays {
  std::string sites;
  std::string limits;
};
inline ScopeArrays ToArrays(const ClaimScope& scope) {
  std::vector<std::string> sites;
  std::vector<int> limits;
  for (const auto& share : scope.shares) {
    size_t i = 0;
    while (i < sites.size() && sites[i] != share.site_id) ++i;
    if (i == sites.size()) {
      sites.push_back(share.site_id);
      limits.push_back(0);
    }
    limits[i] += std::max(share.limit, 0);
  }
  return {TextArray(sites), IntArray(limits)};
}

// A nullable text column; NULL reads as "".
inline std::string Text(const pqxx::field& f) { return f.is_null() ? std::string() : f.as<std::string>(); }

// A nullable numeric column.
inline std::optional<double> Real(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<double>();
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

// An entry of a row's `errors` array, as JSON text (only failures and retries carry one).
inline std::string ErrorEntryJson(const ErrorEntry& e) {
  using nlohmann::json;
  return json{
      {"attempt", e.attempt},     {"at", Iso(e.at)},
      {"kind", ToString(e.kind)}, {"http_status", e.http_status ? json(e.http_status) : json(nullptr)},
      {"message", e.message},     {"request_id", e.request_id.empty() ? json(nullptr) : json(e.request_id)}}
      .dump();
}

// The four error columns every batched write carries (error_kind, last_error, last_http_status,
// error_entry), all NULL when the write records no error.
inline void AddErrorColumns(const std::optional<ErrorEntry>& e, ArrayColumn& kind, ArrayColumn& message,
                            ArrayColumn& http_status, ArrayColumn& entry) {
  if (!e) {
    kind.Null();
    message.Null();
    http_status.Null();
    entry.Null();
    return;
  }
  kind.Text(ToString(e->kind));
  message.Text(e->message);
  e->http_status ? http_status.Int(e->http_status) : http_status.Null();
  entry.Text(ErrorEntryJson(*e));
}

}  // namespace uppzy::store
