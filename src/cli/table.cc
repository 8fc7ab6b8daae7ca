#include "cli/table.h"

#include <algorithm>

namespace uppzy::cli {
namespace {

// Width in characters (UTF-8 continuation bytes do not count).
size_t Width(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string Cut(const std::string& s, size_t max_width) {
  if (Width(s) <= max_width) return s;
  std::string out;
  size_t width = 0;
  for (char c : s) {
    const bool starts_char = (c & 0xC0) != 0x80;
    if (starts_char && width + 1 >= max_width) break;
    if (starts_char) ++width;
    out += c;
  }
  return out + "…";
}

}  // namespace

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::Row(std::vector<std::string> cells) {
  cells.resize(header_.size());
  for (auto& c : cells) {
    std::replace(c.begin(), c.end(), '\n', ' ');
    if (c.empty()) c = "-";
  }
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out, size_t max_width) const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], Width(Cut(r[i], max_width)));
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  auto print = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string cell = Cut(r[i], max_width);
      line += cell;
      if (i + 1 < r.size()) line += std::string(widths[i] - Width(cell) + 2, ' ');
    }
    out << line << "\n";
  };
  print(header_);
  for (const auto& r : rows_) print(r);
}

std::string HumanSeconds(double seconds) {
  if (seconds < 0) return "-";
  long long s = static_cast<long long>(seconds + 0.5);
  if (s < 60) return std::to_string(s) + "s";
  std::string out;
  const long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60;
  s %= 60;
  if (d) out += std::to_string(d) + "d";
  if (h) out += std::to_string(h) + "h";
  if (m && !d) out += std::to_string(m) + "m";
  if (s && !d && !h) out += std::to_string(s) + "s";
  return out;
}

}  // namespace uppzy::cli
