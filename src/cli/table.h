// A plain text table for the operator commands: left-aligned columns, one header row, "-" for empty
// cells. Not thread-safe.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace uppzy::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void Row(std::vector<std::string> cells);
  // Columns separated by two spaces; cells longer than `max_width` are cut with "…".
  void Print(std::ostream& out, size_t max_width = 60) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// 3725.4 -> "1h2m5s"; nullopt-like negative values -> "-".
std::string HumanSeconds(double seconds);

}  // namespace uppzy::cli
