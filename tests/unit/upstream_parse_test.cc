// ParseExchange: one row per mapping rule.
#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "uppzy/parse_exchange.h"

namespace uppzy {
namespace {

// 2015-10-21T07:28:00Z, the "now" every row uses.
constexpr long long kNow = 1445412480;

struct Row {
  std::string name{};
  RequestKind kind = RequestKind::kSubmit;
  long status = 200;
  std::string body{};
  bool curl_ok = true;
  std::string curl_error{};
  bool truncated = false;
  std::string retry_after{};
  // expected
  OutcomeKind want{};
  int want_http = -1;  // -1: same as status
  std::string want_error{};
  std::string want_request_id{};
  std::string want_status{};
  std::string want_answer{};
  std::string want_result_json{};
  std::optional<long long> want_retry_after_ms{};
  std::string want_submitted_at{};
  std::string secret{};  // the worker's API key, redacted from every text
};

std::vector<Row> Rows() {
  using K = RequestKind;
  using O = OutcomeKind;
  const std::string long_error(400, 'x');
  return {
      // No response at all.
      {.name = "refused",
       .status = 0,
       .curl_ok = false,
       .curl_error = "Failed to connect to 127.0.0.1 port 9: Couldn't connect to server",
       .want = O::kNetwork,
       .want_error = "Failed to connect to 127.0.0.1 port 9: Couldn't connect to server"},
      {.name = "timeout",
       .kind = K::kStatus,
       .status = 0,
       .curl_ok = false,
       .curl_error = "Operation timed out after 10000 milliseconds with 0 bytes received",
       .want = O::kNetwork,
       .want_error = "Operation timed out after 10000 milliseconds with 0 bytes received"},
      {.name = "empty_reply_no_message",
       .status = 0,
       .curl_ok = false,
       .want = O::kNetwork,
       .want_error = "no HTTP response"},
      {.name = "reset_mid_body_keeps_status",
       .status = 200,
       .curl_ok = false,
       .curl_error = "Recv failure: Connection reset by peer",
       .want = O::kNetwork,
       .want_error = "Recv failure: Connection reset by peer"},
      {.name = "ok_but_no_status_line", .status = 0, .want = O::kNetwork, .want_error = "no HTTP response"},
      {.name = "network_error_clipped",
       .status = 0,
       .curl_ok = false,
       .curl_error = long_error,
       .want = O::kNetwork,
       .want_error = std::string(300, 'x')},
      // Truncation wins over everything, even a curl error (the write callback aborted).
      {.name = "truncated",
       .status = 200,
       .body = "{\"request_id\":",
       .curl_ok = false,
       .curl_error = "Failure writing output to destination",
       .truncated = true,
       .want = O::kInvalidResponse,
       .want_error = "response larger than 1024 bytes"},
      {.name = "truncated_error_status",
       .status = 503,
       .truncated = true,
       .want = O::kInvalidResponse,
       .want_error = "response larger than 1024 bytes"},
      // Status classes.
      {.name = "401", .status = 401, .want = O::kUnauthorized, .want_error = "HTTP 401"},
      {.name = "403_with_error",
       .status = 403,
       .body = R"({"error":"plan does not allow async"})",
       .want = O::kForbidden,
       .want_error = "HTTP 403: plan does not allow async"},
      {.name = "429_no_header", .status = 429, .want = O::kRateLimited, .want_error = "HTTP 429"},
      {.name = "429_seconds",
       .status = 429,
       .retry_after = " 7\r\n",
       .want = O::kRateLimited,
       .want_error = "HTTP 429",
       .want_retry_after_ms = 7000},
      {.name = "429_zero",
       .status = 429,
       .retry_after = "0",
       .want = O::kRateLimited,
       .want_retry_after_ms = 0},
      {.name = "429_http_date_future",
       .status = 429,
       .retry_after = "Wed, 21 Oct 2015 07:28:30 GMT",
       .want = O::kRateLimited,
       .want_retry_after_ms = 30000},
      {.name = "429_rfc850_date",
       .status = 429,
       .retry_after = "Wednesday, 21-Oct-15 07:29:00 GMT",
       .want = O::kRateLimited,
       .want_retry_after_ms = 60000},
      {.name = "429_http_date_past",
       .status = 429,
       .retry_after = "Wed, 21 Oct 2015 07:00:00 GMT",
       .want = O::kRateLimited,
       .want_retry_after_ms = 0},
      {.name = "429_garbage_header", .status = 429, .retry_after = "soon", .want = O::kRateLimited},
      {.name = "429_negative_number", .status = 429, .retry_after = "-5", .want = O::kRateLimited},
      {.name = "429_huge_clamped",
       .status = 429,
       .retry_after = "99999999999999999999999",
       .want = O::kRateLimited,
       .want_retry_after_ms = 1'000'000'000'000LL},
      {.name = "500",
       .status = 500,
       .body = "<html>oops</html>",
       .want = O::kServerError,
       .want_error = "HTTP 500"},
      {.name = "503_with_error",
       .status = 503,
       .body = R"({"error":"upstream busy"})",
       .want = O::kServerError,
       .want_error = "HTTP 503: upstream busy"},
      {.name = "503_error_not_string",
       .status = 503,
       .body = R"({"error":{"code":1}})",
       .want = O::kServerError,
       .want_error = "HTTP 503"},
      {.name = "599", .status = 599, .want = O::kServerError, .want_error = "HTTP 599"},
      {.name = "400",
       .status = 400,
       .body = R"({"error":"missing field"})",
       .want = O::kBadRequest,
       .want_error = "HTTP 400: missing field"},
      {.name = "404", .status = 404, .want = O::kBadRequest, .want_error = "HTTP 404"},
      {.name = "409", .status = 409, .want = O::kBadRequest, .want_error = "HTTP 409"},
      {.name = "413", .status = 413, .want = O::kBadRequest, .want_error = "HTTP 413"},
      {.name = "422", .status = 422, .want = O::kBadRequest, .want_error = "HTTP 422"},
      {.name = "418_other_4xx", .status = 418, .want = O::kBadRequest, .want_error = "HTTP 418"},
      {.name = "302", .status = 302, .want = O::kInvalidResponse, .want_error = "HTTP 302"},
      {.name = "101", .status = 101, .want = O::kInvalidResponse, .want_error = "HTTP 101"},
      {.name = "error_text_clipped",
       .status = 400,
       .body = R"({"error":")" + long_error + R"("})",
       .want = O::kBadRequest,
       .want_error = "HTTP 400: " + std::string(290, 'x')},
      {.name = "error_text_clipped_on_utf8_boundary",
       .status = 400,
       // "HTTP 400: " is 10 bytes, then 100 three-byte euro signs: byte 300 falls inside the 97th.
       .body = R"({"error":")" +
               [] {
                 std::string s;
                 for (int i = 0; i < 100; ++i) s += "\xE2\x82\xAC";
                 return s;
               }() +
               R"("})",
       .want = O::kBadRequest,
       .want_error = "HTTP 400: " +
                     [] {
                       std::string s;
                       for (int i = 0; i < 96; ++i) s += "\xE2\x82\xAC";
                       return s;
                     }()},
      // Submit.
      {.name = "submit_202",
       .status = 202,
       .body = R"({"session_id":"s","request_id":"req-1","status":"queued"})",
       .want = O::kAccepted,
       .want_request_id = "req-1"},
      {.name = "submit_200",
       .status = 200,
       .body = R"({"request_id":"req-2"})",
       .want = O::kAccepted,
       .want_request_id = "req-2"},
      {.name = "submit_no_request_id",
       .status = 202,
       .body = R"({"status":"queued"})",
       .want = O::kInvalidResponse},
      {.name = "submit_empty_request_id",
       .status = 202,
       .body = R"({"request_id":""})",
       .want = O::kInvalidResponse},
      {.name = "submit_numeric_request_id",
       .status = 202,
       .body = R"({"request_id":12})",
       .want = O::kInvalidResponse},
      {.name = "submit_garbage", .status = 200, .body = "<html>hi</html>", .want = O::kInvalidResponse},
      {.name = "submit_empty_body", .status = 202, .body = "", .want = O::kInvalidResponse},
      {.name = "submit_json_array",
       .status = 200,
       .body = R"([{"request_id":"x"}])",
       .want = O::kInvalidResponse},
      {.name = "submit_json_string", .status = 200, .body = R"("req-1")", .want = O::kInvalidResponse},
      {.name = "submit_deeply_nested",
       .status = 200,
       .body = R"({"request_id":"r","x":)" + std::string(100000, '[') + std::string(100000, ']') + "}",
       .want = O::kInvalidResponse},
      // Status.
      {.name = "status_completed",
       .kind = K::kStatus,
       .body = R"({"session_id":"s","request_id":"r1","status":"completed","answer":"Hi \"there\"",)"
               R"("confidence_level":"high","confidence_score":0.93})",
       .want = O::kStatus,
       .want_request_id = "r1",
       .want_status = "completed",
       .want_answer = "Hi \"there\"",
       .want_result_json = R"({"confidence_level":"high","confidence_score":0.93})"},
      {.name = "status_completed_no_extras",
       .kind = K::kStatus,
       .body = R"({"status":"completed","answer":""})",
       .want = O::kStatus,
       .want_status = "completed",
       .want_answer = "",
       .want_result_json = "{}"},
      {.name = "status_completed_without_answer",
       .kind = K::kStatus,
       .body = R"({"status":"completed"})",
       .want = O::kInvalidResponse},
      {.name = "status_completed_answer_not_string",
       .kind = K::kStatus,
       .body = R"({"status":"completed","answer":null})",
       .want = O::kInvalidResponse},
      {.name = "status_failed",
       .kind = K::kStatus,
       .body = R"({"request_id":"r1","status":"failed","error":"model overloaded"})",
       .want = O::kStatus,
       .want_error = "model overloaded",
       .want_request_id = "r1",
       .want_status = "failed"},
      {.name = "status_failed_without_error",
       .kind = K::kStatus,
       .body = R"({"status":"failed"})",
       .want = O::kStatus,
       .want_error = "",
       .want_status = "failed"},
      {.name = "status_processing",
       .kind = K::kStatus,
       .body = R"({"status":"processing","request_id":"r1"})",
       .want = O::kStatus,
       .want_request_id = "r1",
       .want_status = "processing"},
      {.name = "status_unknown_value_is_in_progress",
       .kind = K::kStatus,
       .body = R"({"status":"thinking-hard"})",
       .want = O::kStatus,
       .want_status = "thinking-hard"},
      {.name = "status_missing",
       .kind = K::kStatus,
       .body = R"({"answer":"x"})",
       .want = O::kInvalidResponse},
      {.name = "status_not_string",
       .kind = K::kStatus,
       .body = R"({"status":3})",
       .want = O::kInvalidResponse},
      {.name = "status_garbage", .kind = K::kStatus, .body = "not json", .want = O::kInvalidResponse},
      {.name = "status_404",
       .kind = K::kStatus,
       .status = 404,
       .body = R"({"error":"request not found"})",
       .want = O::kBadRequest,
       .want_error = "HTTP 404: request not found"},
      // Feedback and session close.
      {.name = "feedback_delivered",
       .kind = K::kFeedback,
       .body =
           R"({"status":"ok","request_id":"r","feedback":"good","feedback_submitted_at":"2015-10-21T07:28:00Z"})",
       .want = O::kDelivered,
       .want_submitted_at = "2015-10-21T07:28:00Z"},
      {.name = "feedback_already_recorded",
       .kind = K::kFeedback,
       .body = R"({"status":"ok","request_id":"r","feedback":"good"})",
       .want = O::kDelivered},
      {.name = "feedback_400",
       .kind = K::kFeedback,
       .status = 400,
       .body = R"({"error":"feedback must be good or bad"})",
       .want = O::kBadRequest,
       .want_error = "HTTP 400: feedback must be good or bad"},
      {.name = "feedback_garbage", .kind = K::kFeedback, .body = "<html/>", .want = O::kInvalidResponse},
      {.name = "close_200", .kind = K::kSessionClose, .body = R"({"status":"ok"})", .want = O::kDelivered},
      {.name = "close_204_empty", .kind = K::kSessionClose, .status = 204, .body = "", .want = O::kDelivered},
      {.name = "close_500",
       .kind = K::kSessionClose,
       .status = 500,
       .want = O::kServerError,
       .want_error = "HTTP 500"},
  };
}

// Hostile input: what a vendor reply may carry that must never reach a row or a log as it is. NUL is
// replaced by U+FFFD; invalid UTF-8 is refused; request ids are checked; the key is redacted.
std::vector<Row> HostileRows() {
  using K = RequestKind;
  using O = OutcomeKind;
  const std::string fffd = "\xEF\xBF\xBD";
  const std::string key = "uppzy_live_SECRETKEY123";
  return {
      {.name = "nul_in_answer",
       .kind = K::kStatus,
       .body = R"({"status":"completed","answer":"a\u0000b"})",
       .want = O::kStatus,
       .want_status = "completed",
       .want_answer = "a" + fffd + "b",
       .want_result_json = "{}"},
      {.name = "nul_in_result_key_and_value",
       .kind = K::kStatus,
       .body = R"({"status":"completed","answer":"ok","x\u0000":["v\u0000"]})",
       .want = O::kStatus,
       .want_status = "completed",
       .want_answer = "ok",
       .want_result_json = "{\"x" + fffd + "\":[\"v" + fffd + "\"]}"},
      {.name = "nul_in_failed_error",
       .kind = K::kStatus,
       .body = R"({"status":"failed","error":"bad\u0000"})",
       .want = O::kStatus,
       .want_error = "bad" + fffd,
       .want_status = "failed"},
      {.name = "nul_in_status_value",
       .kind = K::kStatus,
       .body = R"({"status":"work\u0000ing","request_id":"r\u0000"})",
       .want = O::kStatus,
       .want_request_id = "r" + fffd,
       .want_status = "work" + fffd + "ing"},
      {.name = "nul_in_500_error",
       .status = 500,
       .body = R"({"error":"x\u0000"})",
       .want = O::kServerError,
       .want_error = "HTTP 500: x" + fffd},
      {.name = "nul_in_401_error",
       .status = 401,
       .body = R"({"error":"invalid key\u0000 here"})",
       .want = O::kUnauthorized,
       .want_error = "HTTP 401: invalid key" + fffd + " here"},
      {.name = "nul_in_feedback_500",
       .kind = K::kFeedback,
       .status = 500,
       .body = R"({"error":"x\u0000"})",
       .want = O::kServerError,
       .want_error = "HTTP 500: x" + fffd},
      {.name = "raw_nul_byte_in_body",
       .kind = K::kStatus,
       .body = std::string("{\"status\":\"completed\",\"answer\":\"a") + '\0' + "b\"}",
       .want = O::kInvalidResponse},
      {.name = "invalid_utf8_answer",
       .kind = K::kStatus,
       .body = "{\"status\":\"completed\",\"answer\":\"\xC3\x28\"}",
       .want = O::kInvalidResponse,
       .want_error = "HTTP 200: body is not valid UTF-8"},
      {.name = "overlong_utf8_refused",
       .body = "{\"request_id\":\"\xC0\xAF\"}",
       .want = O::kInvalidResponse,
       .want_error = "HTTP 200: body is not valid UTF-8"},
      {.name = "surrogate_utf8_refused",
       .kind = K::kStatus,
       .body = "{\"status\":\"completed\",\"answer\":\"\xED\xA0\x80\"}",
       .want = O::kInvalidResponse,
       .want_error = "HTTP 200: body is not valid UTF-8"},
      {.name = "invalid_utf8_in_error_body_keeps_kind",
       .status = 503,
       .body = "{\"error\":\"\xFF\"}",
       .want = O::kServerError,
       .want_error = "HTTP 503"},
      {.name = "invalid_utf8_in_curl_error_replaced",
       .status = 0,
       .curl_ok = false,
       .curl_error = "bad \xFF host",
       .want = O::kNetwork,
       .want_error = "bad " + fffd + " host"},
      {.name = "request_id_nul",
       .status = 202,
       .body = R"({"request_id":"req\u0000x"})",
       .want = O::kInvalidResponse,
       .want_error = "request_id has a byte that is not printable ASCII"},
      {.name = "request_id_dot",
       .status = 202,
       .body = R"({"request_id":"."})",
       .want = O::kInvalidResponse,
       .want_error = "request_id is a dot segment"},
      {.name = "request_id_dotdot",
       .status = 202,
       .body = R"({"request_id":".."})",
       .want = O::kInvalidResponse,
       .want_error = "request_id is a dot segment"},
      {.name = "request_id_empty",
       .status = 202,
       .body = R"({"request_id":""})",
       .want = O::kInvalidResponse,
       .want_error = "submit response has no request_id"},
      {.name = "request_id_too_long",
       .status = 202,
       .body = R"({"request_id":")" + std::string(201, 'r') + R"("})",
       .want = O::kInvalidResponse,
       .want_error = "request_id longer than 200 bytes"},
      {.name = "request_id_longest_accepted",
       .status = 202,
       .body = R"({"request_id":")" + std::string(200, 'r') + R"("})",
       .want = O::kAccepted,
       .want_request_id = std::string(200, 'r')},
      {.name = "request_id_with_space",
       .status = 202,
       .body = R"({"request_id":"req 1"})",
       .want = O::kInvalidResponse,
       .want_error = "request_id has a byte that is not printable ASCII"},
      {.name = "request_id_non_ascii",
       .status = 202,
       .body = R"({"request_id":"r\u00e9q"})",
       .want = O::kInvalidResponse,
       .want_error = "request_id has a byte that is not printable ASCII"},
      {.name = "request_id_slashes_are_fine",
       .status = 202,
       .body = R"({"request_id":"a/b..c"})",
       .want = O::kAccepted,
       .want_request_id = "a/b..c"},
      {.name = "key_echoed_in_error",
       .status = 401,
       .body = R"({"error":"key uppzy_live_SECRETKEY123 is revoked"})",
       .want = O::kUnauthorized,
       .want_error = "HTTP 401: key [redacted] is revoked",
       .secret = key},
      {.name = "key_echoed_in_answer_and_result",
       .kind = K::kStatus,
       .body = R"({"status":"completed","answer":"uppzy_live_SECRETKEY123!","k":"uppzy_live_SECRETKEY123"})",
       .want = O::kStatus,
       .want_status = "completed",
       .want_answer = "[redacted]!",
       .want_result_json = R"({"k":"[redacted]"})",
       .secret = key},
      {.name = "short_key_not_redacted",
       .status = 500,
       .body = R"({"error":"abc failed"})",
       .want = O::kServerError,
       .want_error = "HTTP 500: abc failed",
       .secret = "abc"},
      {.name = "nul_then_clip_stays_utf8",
       .status = 500,
       .body = R"({"error":")" + std::string(288, 'e') + R"(\u0000\u0000"})",
       .want = O::kServerError,
       .want_error = "HTTP 500: " + std::string(288, 'e')},
      {.name = "feedback_year_zero_refused",
       .kind = K::kFeedback,
       .body = R"({"status":"ok","feedback_submitted_at":"0000-01-01T00:00:00Z"})",
       .want = O::kInvalidResponse,
       .want_error = "feedback_submitted_at is not an ISO 8601 time between 1970 and 2200"},
      {.name = "feedback_far_future_refused",
       .kind = K::kFeedback,
       .body = R"({"status":"ok","feedback_submitted_at":"9999-12-31T23:59:59Z"})",
       .want = O::kInvalidResponse,
       .want_error = "feedback_submitted_at is not an ISO 8601 time between 1970 and 2200"},
      {.name = "feedback_garbage_time_refused",
       .kind = K::kFeedback,
       .body = R"({"status":"ok","feedback_submitted_at":"yesterday\u0000"})",
       .want = O::kInvalidResponse,
       .want_error = "feedback_submitted_at is not an ISO 8601 time between 1970 and 2200"},
  };
}

// gtest prints the parameter in test listings; the row's name is enough.
void PrintTo(const Row& r, std::ostream* os) { *os << r.name; }

class ParseExchangeTest : public ::testing::TestWithParam<Row> {};

TEST_P(ParseExchangeTest, Maps) {
  const Row& r = GetParam();
  Outcome o =
      ParseExchange(r.kind, r.curl_ok, r.curl_error, r.status, r.body, r.truncated, r.retry_after, kNow,
                    /*max_response_bytes=*/1024, r.secret);
  EXPECT_EQ(o.kind, r.want);
  EXPECT_EQ(o.http_status, r.want_http == -1 ? r.status : r.want_http);
  if (!r.want_error.empty() || o.kind == OutcomeKind::kStatus) {
    EXPECT_EQ(o.error, r.want_error);
  }
  if (o.kind != OutcomeKind::kStatus && o.kind != OutcomeKind::kAccepted &&
      o.kind != OutcomeKind::kDelivered) {
    EXPECT_FALSE(o.error.empty()) << "a failure always says why";
  }
  EXPECT_LE(o.error.size(), 300u);
  EXPECT_EQ(o.request_id, r.want_request_id);
  EXPECT_EQ(o.status, r.want_status);
  EXPECT_EQ(o.answer, r.want_answer);
  EXPECT_EQ(o.result_json, r.want_result_json);
  EXPECT_EQ(o.feedback_submitted_at, r.want_submitted_at);
  if (r.want_retry_after_ms) {
    ASSERT_TRUE(o.retry_after.has_value());
    EXPECT_EQ(o.retry_after->count(), *r.want_retry_after_ms);
  } else {
    EXPECT_FALSE(o.retry_after.has_value());
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, ParseExchangeTest, ::testing::ValuesIn(Rows()),
                         [](const ::testing::TestParamInfo<Row>& row) { return row.param.name; });
INSTANTIATE_TEST_SUITE_P(Hostile, ParseExchangeTest, ::testing::ValuesIn(HostileRows()),
                         [](const ::testing::TestParamInfo<Row>& row) { return row.param.name; });

TEST(ParseExchange, ShortFormSaysTheLimitGenerically) {
  Outcome o = ParseExchange(RequestKind::kSubmit, false, "", 200, "", true, "", kNow);
  EXPECT_EQ(o.kind, OutcomeKind::kInvalidResponse);
  EXPECT_EQ(o.error, "response larger than the limit");
}

TEST(ParseExchange, ErrorNeverEchoesTheRequest) {
  // A server that echoes the (private) message back in a non-JSON error body: we keep only "HTTP 400".
  Outcome o =
      ParseExchange(RequestKind::kSubmit, true, "", 400, "bad message: my secret text", false, "", kNow);
  EXPECT_EQ(o.error, "HTTP 400");
}

TEST(ParseExchange, RequestKindNames) {
  EXPECT_EQ(ToString(RequestKind::kSubmit), "submit");
  EXPECT_EQ(ToString(RequestKind::kStatus), "status");
  EXPECT_EQ(ToString(RequestKind::kFeedback), "feedback");
  EXPECT_EQ(ToString(RequestKind::kSessionClose), "session_close");
}

}  // namespace
}  // namespace uppzy
