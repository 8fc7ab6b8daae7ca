// Dump: compact JSON text that never throws on the text it carries. Invalid UTF-8 in a string (a
// vendor's answer, an operator's input) is replaced with U+FFFD instead of throwing
// nlohmann::json::type_error, so an answer or a log line is always written. Header-only; throws
// nothing but std::bad_alloc.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uppzy {

inline std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace uppzy
