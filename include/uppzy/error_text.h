// FirstLine: the first line of an error text. PostgreSQL's and libpqxx's messages run over several
// lines, and the DETAIL lines may quote row data (a message text, say), so a log line, a CLI message
// or a JSON error shows only the first.
// Pure and header-only; never throws but std::bad_alloc.
#pragma once

#include <string>
#include <string_view>

namespace uppzy {

inline std::string FirstLine(std::string_view text) { return std::string(text.substr(0, text.find('\n'))); }

}  // namespace uppzy
