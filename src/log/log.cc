#include "uppzy/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>

namespace uppzy {
namespace {

std::atomic<bool> g_json{false};
// Set once at start-up, before any thread logs (SetLogRedaction's contract), then only read.
std::string g_secret;

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7F; }

std::string Quote(std::string_view v) {
  // Text format: quote values that contain spaces so a line stays machine-splittable, and escape
  // control bytes (NUL, CR, ESC from a vendor reply must not reach a terminal or a log shipper raw).
  const bool plain = !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    return c == ' ' || c == '"' || c == '=' || c == '\\' || IsControl(static_cast<unsigned char>(c));
  });
  if (plain) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (IsControl(u)) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The API key never reaches a line, whatever a caller passes (an upstream may echo it back).
void Redact(nlohmann::json& v) {
  if (g_secret.empty() || !v.is_string()) return;
  auto& s = v.get_ref<std::string&>();
  for (size_t pos = s.find(g_secret); pos != std::string::npos; pos = s.find(g_secret, pos)) {
    s.replace(pos, g_secret.size(), "[redacted]");
    pos += 10;
  }
}

void Emit(spdlog::level::level_enum level, std::string_view event,
          std::vector<std::pair<std::string_view, nlohmann::json>>& fields) {
  if (!spdlog::default_logger_raw()->should_log(level)) return;
  for (auto& field : fields) Redact(field.second);
  if (g_json.load(std::memory_order_relaxed)) {
    nlohmann::json j = nlohmann::json::object();
    j["event"] = event;
    for (const auto& [k, v] : fields) j[std::string(k)] = v;
    std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    // The pattern supplies ts and level; splice the remaining fields into the same object.
    spdlog::log(level, "{}", std::string_view(s).substr(1, s.size() - 2));
    return;
  }
  std::string line(event);
  for (const auto& [k, v] : fields) {
    line += ' ';
    line += k;
    line += '=';
    if (v.is_string()) {
      line += Quote(v.get_ref<const std::string&>());
    } else if (v.is_null()) {
      line += '-';
    } else {
      line += v.dump();
    }
  }
  spdlog::log(level, "{}", line);
}

}  // namespace

void SetLogRedaction(const std::string& secret) { g_secret = secret.size() >= 8 ? secret : std::string(); }

void InitLogging(const std::string& level, const std::string& format) {
  auto logger = spdlog::stderr_logger_mt("uppzy");
  spdlog::set_default_logger(logger);
  g_json = format == "json";
  if (g_json) {
    spdlog::set_pattern("{\"ts\":\"%Y-%m-%dT%H:%M:%S.%eZ\",\"level\":\"%l\",%v}",
                        spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  }
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

void LogJob(spdlog::level::level_enum level, std::string_view event, const JobLogFields& f,
            std::string_view detail) {
  using nlohmann::json;
  std::vector<std::pair<std::string_view, json>> fields = {
      {"job_id", f.job_id},
      {"attempt", f.attempt},
      {"state", std::string(ToString(f.state))},
      {"error_kind",
       f.error_kind == ErrorKind::kNone ? json(nullptr) : json(std::string(ToString(f.error_kind)))},
      {"request_id", f.request_id.empty() ? json(nullptr) : json(std::string(f.request_id))},
      {"http_status", f.http_status ? json(f.http_status) : json(nullptr)},
      {"duration_ms", f.duration_ms >= 0 ? json(f.duration_ms) : json(nullptr)},
  };
  if (!detail.empty()) fields.emplace_back("detail", std::string(detail));
  Emit(level, event, fields);
}

void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  std::vector<std::pair<std::string_view, nlohmann::json>> f;
  for (const auto& [k, v] : fields) f.emplace_back(k, v);
  Emit(level, event, f);
}

}  // namespace uppzy
