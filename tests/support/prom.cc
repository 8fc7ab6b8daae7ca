#include "support/prom.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "support/support.h"

namespace uppzy::test {

bool ParsePrometheus(const std::string& text, std::vector<PromSample>* samples, std::string* error) {
  char tmpl[] = "/tmp/uppzy-prom-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) {
    *error = "mkstemp failed";
    return false;
  }
  close(fd);
  {
    std::ofstream out(tmpl);
    out << text;
  }
  std::string output;
  const int rc =
      RunCommand({"/usr/bin/python3", std::string(UPPZY_SOURCE_DIR) + "/tests/support/prom_parse.py", tmpl},
                 {}, &output);
  unlink(tmpl);
  if (rc != 0) {
    *error = output;
    return false;
  }
  samples->clear();
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> f;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) {
      f.push_back(line.substr(start, tab - start));
    }
    f.push_back(line.substr(start));
    if (f.size() != 5) continue;
    PromSample s{f[0], f[1], f[2], f[3], std::stod(f[4])};
    samples->push_back(std::move(s));
  }
  return true;
}

double SampleValue(const std::vector<PromSample>& samples, const std::string& name,
                   const std::string& labels) {
  for (const auto& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return NAN;
}

}  // namespace uppzy::test
