#include "mock/mock_script.h"

#include <charconv>

namespace uppzy::mock {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Parses a whole string as a decimal integer in [lo, hi].
template <typename Int>
std::optional<Int> ParseInt(std::string_view s, Int lo, Int hi) {
  Int value{};
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || ec != std::errc() || ptr != end || value < lo || value > hi) return std::nullopt;
  return value;
}

std::optional<Script> ParseScript(std::string_view list) {
  Script script;
  while (true) {
    size_t comma = list.find(',');
    std::optional<ScriptStep> step = ParseScriptStep(list.substr(0, comma));
    if (!step) return std::nullopt;
    script.push_back(*step);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return script;
}

}  // namespace

std::optional<ScriptStep> ParseScriptStep(std::string_view token) {
  using Kind = ScriptStep::Kind;
  if (token == "ok") return ScriptStep{Kind::kOk};
  if (token == "processing") return ScriptStep{Kind::kProcessing};
  if (token == "completed") return ScriptStep{Kind::kCompleted};
  if (token == "failed") return ScriptStep{Kind::kFailed};
  if (token == "hang") return ScriptStep{Kind::kHang};
  if (token == "reset") return ScriptStep{Kind::kReset};
  if (token == "garbage") return ScriptStep{Kind::kGarbage};
  if (token == "huge") return ScriptStep{Kind::kHuge};
  if (token == "nul") return ScriptStep{Kind::kNul};
  if (token == "dotdot") return ScriptStep{Kind::kDotDot};
  bool nul_error = false;
  if (token.size() > 3 && token.substr(token.size() - 3) == "nul") {
    nul_error = true;
    token.remove_suffix(3);
  }

  ScriptStep step{Kind::kStatus};
  size_t colon = token.find(':');
  std::optional<uint16_t> status = ParseInt<uint16_t>(token.substr(0, colon), 100, 599);
  if (!status) return std::nullopt;
  step.status = *status;
  step.nul_error = nul_error;
  if (colon != std::string_view::npos) {
    std::optional<int32_t> seconds = ParseInt<int32_t>(token.substr(colon + 1), 0, 86400 * 365);
    if (!seconds) return std::nullopt;
    step.retry_after_s = *seconds;
  }
  return step;
}

std::optional<Directives> ParseDirectives(std::string_view text, std::string* error) {
  Directives out;
  // Fast path: almost every message in a load test has no directive.
  if (text.find("mock.") == std::string_view::npos) return out;

  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !IsSpace(text[i])) ++i;
    std::string_view token = text.substr(start, i - start);
    if (!token.starts_with("mock.")) continue;
    size_t eq = token.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = token.substr(0, eq);
    std::string_view value = token.substr(eq + 1);

    std::optional<Script>* script_slot = nullptr;
    if (key == "mock.submit") {
      script_slot = &out.submit;
    } else if (key == "mock.poll") {
      script_slot = &out.poll;
    } else if (key == "mock.feedback") {
      script_slot = &out.feedback;
    } else if (key == "mock.close") {
      script_slot = &out.close;
    } else if (key == "mock.ready") {
      out.ready_ms = ParseInt<int64_t>(value, 0, int64_t{86400} * 1000 * 365);
      if (!out.ready_ms) {
        *error = "bad mock.ready value (want milliseconds >= 0)";
        return std::nullopt;
      }
      continue;
    } else if (key == "mock.fail") {
      if (value.empty()) {
        *error = "empty mock.fail reason";
        return std::nullopt;
      }
      out.fail = std::string(value);
      continue;
    } else {
      continue;  // an unknown mock.* word is plain text
    }
    *script_slot = ParseScript(value);
    if (!*script_slot) {
      *error = "bad " + std::string(key) + " script";
      return std::nullopt;
    }
  }
  return out;
}

ScriptStep StepThenOk(const Script& script, uint64_t index) {
  return index < script.size() ? script[index] : ScriptStep{ScriptStep::Kind::kOk};
}

ScriptStep StepThenLast(const Script& script, uint64_t index) {
  return index < script.size() ? script[index] : script.back();
}

}  // namespace uppzy::mock
