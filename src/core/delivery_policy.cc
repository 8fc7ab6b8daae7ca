#include "uppzy/delivery_policy.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>

namespace uppzy {
namespace {

std::string Describe(const Outcome& o) {
  if (!o.error.empty()) return o.error;
  if (o.http_status != 0) return "HTTP " + std::to_string(o.http_status);
  return "no response";
}

DeliveryTransition Make(DeliveryAction action, TimePoint at, ErrorKind kind, int http_status,
                        std::string message) {
  DeliveryTransition t;
  t.action = action;
  t.at = at;
  t.error_kind = kind;
  t.http_status = http_status;
  t.message = std::move(message);
  return t;
}

// A failed send: again after a backoff while attempts remain, else failed for good.
DeliveryTransition RetryOrFail(const DeliveryContext& d, ErrorKind kind, int http_status, std::string message,
                               std::optional<Millis> retry_after, TimePoint now, const Policy& p,
                               double jitter) {
  if (d.attempt >= d.max_attempts)
    return Make(DeliveryAction::kFail, now, kind, http_status, std::move(message));
  const Millis delay = retry_after ? std::clamp(*retry_after, Millis(0), p.retry_after_max)
                                   : Backoff(d.attempt, p.backoff_base, p.backoff_max, jitter);
  return Make(DeliveryAction::kRetry, now + delay, kind, http_status, std::move(message));
}

// Reads exactly `n` digits at `*pos`.
bool Digits(std::string_view s, size_t* pos, size_t n, int* out) {
  if (*pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

}  // namespace

std::string_view ToString(DeliveryAction a) {
  switch (a) {
    case DeliveryAction::kDeliver:
      return "deliver";
    case DeliveryAction::kRetry:
      return "retry";
    case DeliveryAction::kFail:
      return "fail";
    case DeliveryAction::kIncident:
      return "incident";
  }
  return "unknown";
}

std::optional<TimePoint> ParseIsoTimestamp(std::string_view s) {
  using namespace std::chrono;
  size_t pos = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!Digits(s, &pos, 4, &y) || !Expect(s, &pos, '-') || !Digits(s, &pos, 2, &mo) || !Expect(s, &pos, '-') ||
      !Digits(s, &pos, 2, &d)) {
    return std::nullopt;
  }
  if (pos >= s.size() || (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ')) return std::nullopt;
  ++pos;
  if (!Digits(s, &pos, 2, &h) || !Expect(s, &pos, ':') || !Digits(s, &pos, 2, &mi) || !Expect(s, &pos, ':') ||
      !Digits(s, &pos, 2, &sec)) {
    return std::nullopt;
  }
  if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
  long long frac_us = 0;
  if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
    ++pos;
    size_t n = 0;
    long long scale = 100000;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (n < 6) {
        frac_us += (s[pos] - '0') * scale;
        scale /= 10;
      }
      ++pos;
      ++n;
    }
    if (n == 0) return std::nullopt;
  }
  int offset_min = 0;
  if (pos < s.size()) {
    const char c = s[pos];
    if (c == 'Z' || c == 'z') {
      ++pos;
    } else if (c == '+' || c == '-') {
      ++pos;
      int oh, om;
      if (!Digits(s, &pos, 2, &oh)) return std::nullopt;
      Expect(s, &pos, ':');
      if (!Digits(s, &pos, 2, &om) || oh > 23 || om > 59) return std::nullopt;
      offset_min = (c == '+' ? 1 : -1) * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  if (y < 1970 || y > 2200) return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  const auto t =
      sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + microseconds{frac_us} - minutes{offset_min};
  return time_point_cast<Clock::duration>(t);
}

DeliveryTransition DecideDelivery(const DeliveryContext& d, const Outcome& o, TimePoint now, const Policy& p,
                                  double jitter01) {
  switch (o.kind) {
    case OutcomeKind::kUnauthorized:
    case OutcomeKind::kForbidden:
      // A configuration incident: never retried automatically and never charged to the row.
      return Make(DeliveryAction::kIncident, now, ErrorKindOf(o), o.http_status, Describe(o));
    case OutcomeKind::kDelivered: {
      DeliveryTransition t = Make(DeliveryAction::kDeliver, now, ErrorKind::kNone, o.http_status, {});
      if (d.kind == DeliveryKind::kFeedback && !o.feedback_submitted_at.empty()) {
        t.feedback_submitted_at = ParseIsoTimestamp(o.feedback_submitted_at);
      }
      return t;
    }
    case OutcomeKind::kBadRequest:
      if (d.kind == DeliveryKind::kSessionClose && o.http_status == 409) {
        // "Conflict or duplicate operation": the session is closed already, which is what we wanted.
        return Make(DeliveryAction::kDeliver, now, ErrorKind::kNone, o.http_status, "session already closed");
      }
      return Make(DeliveryAction::kFail, now, ErrorKind::kBadRequest, o.http_status, Describe(o));
    case OutcomeKind::kRateLimited:
    case OutcomeKind::kServerError:
    case OutcomeKind::kNetwork:
    case OutcomeKind::kInvalidResponse:
      return RetryOrFail(d, ErrorKindOf(o), o.http_status, Describe(o), o.retry_after, now, p, jitter01);
    case OutcomeKind::kAccepted:
    case OutcomeKind::kStatus:
      break;
  }
  return RetryOrFail(d, ErrorKind::kInvalidResponse, o.http_status, "unexpected response to a delivery",
                     std::nullopt, now, p, jitter01);
}

}  // namespace uppzy
