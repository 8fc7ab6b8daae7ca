// Who is asking the dashboard, and whether a POST may change anything: the sign-in sessions, their
// cookie, their CSRF tokens, the bearer token scripts send, and the same-origin rule for POSTs.
//
//   - Without a token (read-only mode) nobody signs in: Identify() always answers "nobody".
//   - With one, a browser signs in once (POST /login) and gets an HttpOnly, SameSite=Strict cookie
//     that names a session for 12 hours (at most 1,000 sessions; the oldest goes first). Scripts may
//     send `Authorization: Bearer <token>` instead and need no session.
//   - A POST made with the session cookie needs that session's CSRF token in `X-CSRF-Token` (the page
//     reads it from <meta name="csrf-token">); a bearer caller needs none, since a browser never adds
//     that header on its own. A POST whose Origin names another host is refused whoever sends it.
//
// Thread-safe: every method may be called from any request thread at once. Open() throws
// std::runtime_error when the system has no randomness to give; nothing else throws but
// std::bad_alloc.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

#include "http/server.h"

namespace uppzy::dashboard {

// Who is asking: nobody (read-only mode or not signed in), a browser session, or a script with the
// token.
struct Caller {
  bool authenticated = false;
  bool bearer = false;
  std::string session_id;  // "" unless a browser session
  std::string csrf;        // that session's CSRF token
};

class Sessions {
 public:
  // `token` is UPPZY_DASHBOARD_TOKEN; "" means read-only: nobody is ever authenticated.
  explicit Sessions(std::string token) : token_(std::move(token)) {}

  Caller Identify(const http::Request& req);
  // Whether `sent` is the dashboard's token (in time that does not depend on where they differ).
  bool TokenMatches(std::string_view sent) const;

  // Opens a session and returns the Set-Cookie value that carries it to the browser.
  std::string Open();
  // Ends the caller's session, if it has one, and returns the Set-Cookie value that clears the cookie.
  std::string Close(const Caller& caller);

  // The CSRF rule for a POST: a bearer caller passes; a session caller must send its own token.
  static bool CsrfOk(const http::Request& req, const Caller& caller);
  // A POST without Origin, or whose Origin names the host it was sent to.
  static bool SameOrigin(const http::Request& req);

 private:
  struct Session {
    std::string csrf;
    std::chrono::steady_clock::time_point expires;
  };

  const std::string token_;
  std::mutex mu_;
  std::unordered_map<std::string, Session> sessions_;  // by session id; guarded by mu_
};

}  // namespace uppzy::dashboard
