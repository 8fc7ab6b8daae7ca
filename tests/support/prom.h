// Prometheus text checked with a real parser: Debian's python3-prometheus-client, through
// tests/support/prom_parse.py. Not thread-safe.
#pragma once

#include <string>
#include <vector>

namespace uppzy::test {

struct PromSample {
  std::string family;  // e.g. "uppzy_submissions" (the parser drops a counter's _total)
  std::string type;    // counter, gauge, histogram, ...
  std::string name;    // e.g. "uppzy_submissions_total", "uppzy_x_bucket"
  std::string labels;  // sorted JSON, e.g. {"endpoint":"submit","le":"0.5"}
  double value = 0;
};

// Parses `text`; returns false (and the parser's complaint in *error) when it is not valid
// exposition format or a family appears twice.
bool ParsePrometheus(const std::string& text, std::vector<PromSample>* samples, std::string* error);

// The value of the sample with this name and labels; NaN when absent.
double SampleValue(const std::vector<PromSample>& samples, const std::string& name,
                   const std::string& labels = "{}");

}  // namespace uppzy::test
