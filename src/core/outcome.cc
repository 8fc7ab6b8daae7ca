#include "uppzy/outcome.h"

#include <string>
#include <utility>

namespace uppzy {

Outcome Outcome::Accepted(std::string request_id, int http_status) {
  Outcome o;
  o.kind = OutcomeKind::kAccepted;
  o.http_status = http_status;
  o.request_id = std::move(request_id);
  return o;
}

Outcome Outcome::Status(std::string status, std::string answer, std::string error) {
  Outcome o;
  o.kind = OutcomeKind::kStatus;
  o.http_status = 200;
  o.status = std::move(status);
  o.answer = std::move(answer);
  o.error = std::move(error);
  return o;
}

Outcome Outcome::Of(OutcomeKind kind, int http_status, std::string error) {
  Outcome o;
  o.kind = kind;
  o.http_status = http_status;
  o.error = std::move(error);
  return o;
}

ErrorKind ErrorKindOf(const Outcome& o) {
  switch (o.kind) {
    case OutcomeKind::kAccepted:
    case OutcomeKind::kStatus:
    case OutcomeKind::kDelivered:
      return ErrorKind::kNone;
    case OutcomeKind::kRateLimited:
      return ErrorKind::kRateLimited;
    case OutcomeKind::kServerError:
      return ErrorKind::kServerError;
    case OutcomeKind::kNetwork:
      return ErrorKind::kNetwork;
    case OutcomeKind::kBadRequest:
      return ErrorKind::kBadRequest;
    case OutcomeKind::kUnauthorized:
      return ErrorKind::kUnauthorized;
    case OutcomeKind::kForbidden:
      return ErrorKind::kForbidden;
    case OutcomeKind::kInvalidResponse:
      return ErrorKind::kInvalidResponse;
  }
  return ErrorKind::kInvalidResponse;
}

std::string Describe(const Outcome& o) {
  if (!o.error.empty()) return o.error;
  if (o.http_status != 0) return "HTTP " + std::to_string(o.http_status);
  return "no response";
}

}  // namespace uppzy
