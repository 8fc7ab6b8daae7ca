#include "dashboard/sessions.h"

#include <openssl/rand.h>

#include <stdexcept>
#include <vector>

#include "dashboard/params.h"

namespace uppzy::dashboard {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr const char* kCookieName = "uppzy_dashboard_session";
constexpr auto kSessionLifetime = std::chrono::hours(12);
constexpr size_t kMaxSessions = 1000;

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : buf) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string CookieValue(const http::Request& req, std::string_view name) {
  for (const std::string& header : req.Headers("Cookie")) {
    size_t pos = 0;
    while (pos < header.size()) {
      size_t end = header.find(';', pos);
      if (end == std::string::npos) end = header.size();
      std::string_view part(header.data() + pos, end - pos);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=') {
        return std::string(part.substr(name.size() + 1));
      }
      pos = end + 1;
    }
  }
  return {};
}

}  // namespace

bool Sessions::TokenMatches(std::string_view sent) const {
  return !token_.empty() && ConstantTimeEquals(sent, token_);
}

Caller Sessions::Identify(const http::Request& req) {
  Caller c;
  if (token_.empty()) return c;
  const std::string auth = req.Header("Authorization");
  if (auth.rfind("Bearer ", 0) == 0 && TokenMatches(std::string_view(auth).substr(7))) {
    c.authenticated = c.bearer = true;
    return c;
  }
  const std::string sid = CookieValue(req, kCookieName);
  if (sid.empty()) return c;
  std::lock_guard lock(mu_);
  auto it = sessions_.find(sid);
  if (it == sessions_.end()) return c;
  if (it->second.expires < SteadyClock::now()) {
    sessions_.erase(it);
    return c;
  }
  c.authenticated = true;
  c.session_id = sid;
  c.csrf = it->second.csrf;
  return c;
}

std::string Sessions::Open() {
  const std::string sid = RandomHex(32);
  {
    std::lock_guard lock(mu_);
    const auto now = SteadyClock::now();
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = it->second.expires < now ? sessions_.erase(it) : std::next(it);
    }
    if (sessions_.size() >= kMaxSessions) {
      auto oldest = sessions_.begin();
      for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
        if (it->second.expires < oldest->second.expires) oldest = it;
      }
      sessions_.erase(oldest);
    }
    sessions_[sid] = Session{RandomHex(32), now + kSessionLifetime};
  }
  return std::string(kCookieName) + "=" + sid + "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
         std::to_string(std::chrono::seconds(kSessionLifetime).count());
}

std::string Sessions::Close(const Caller& caller) {
  if (!caller.session_id.empty()) {
    std::lock_guard lock(mu_);
    sessions_.erase(caller.session_id);
  }
  return std::string(kCookieName) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";
}

bool Sessions::CsrfOk(const http::Request& req, const Caller& caller) {
  if (caller.bearer) return true;
  const std::string sent = req.Header("X-CSRF-Token");
  return !sent.empty() && ConstantTimeEquals(sent, caller.csrf);
}

bool Sessions::SameOrigin(const http::Request& req) {
  const std::string origin = req.Header("Origin");
  if (origin.empty()) return true;
  const auto scheme_end = origin.find("://");
  const std::string origin_host = scheme_end == std::string::npos ? "" : origin.substr(scheme_end + 3);
  return origin_host == req.Header("Host");
}

}  // namespace uppzy::dashboard
