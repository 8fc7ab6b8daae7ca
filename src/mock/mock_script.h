// Per-job scripting of the mock Uppzy server: the `mock.*` directives that a test writes into a message
// text (or, for feedback and close, into a session_id) to choose what the mock answers.
//
// Grammar: the text is split on ASCII whitespace. A token is a directive if it starts with one of the
// keys below followed by '='; every other token (including unknown `mock.` words) is plain text.
//
//   mock.submit=STEP,STEP,...   successive submissions of this (session_id, message): these answers in
//                               order, then `ok` forever
//   mock.poll=STEP,STEP,...     successive polls of one request: these answers; the last one repeats
//   mock.feedback=STEP,...      (in session_id) successive feedback posts of the session, then `ok`
//   mock.close=STEP,...         (in session_id) successive close posts of the session, then `ok`
//   mock.ready=MS               the request completes MS milliseconds after submission
//   mock.fail=REASON            the request ends `failed` with error REASON
//
// STEP is one of:
//   ok          normal behaviour (for a poll: processing until the ready time, then completed/failed)
//   processing  poll only: "processing" now, whatever the ready time
//   completed   poll only: complete now with the echo answer (later `ok` polls stay completed)
//   failed      poll only: fail now, with the mock.fail reason or "mock failure"
//   NNN         that HTTP status (100..599) with a JSON {"error": ...} body and no Retry-After
//   429:N       429 with `Retry-After: N`
//   hang        no answer: the connection is held (the client times out), closed after --hang-max-ms
//   reset       the connection is closed without any response
//   garbage     200, Content-Type application/json, a body that is not JSON
//   huge        200, a well-formed JSON object {"padding":"xxx..."} of exactly 20 MiB, streamed
//   nul         a hostile 2xx carrying NUL (\u0000): submit 202 with a request_id holding NUL; poll
//               200 completed with NUL in the answer and in a result key and value; feedback 200 with
//               NUL in a field and feedback_submitted_at "0000-01-01T00:00:00Z"; close 200 with NUL
//   dotdot      submit only: 202 with request_id ".." (a dot segment a URL would swallow)
//   NNNnul      that HTTP status with {"error": "mock error<NUL> with NUL"} (e.g. 500nul, 401nul)
// In submit, feedback and close scripts, processing/completed/failed mean `ok`. A scripted non-ok
// submit creates no request. A call whose text carries the directive of its endpoint is "scripted":
// the random faults (--fault-rate-*) never hit it, even after its script has run out.
// If a directive appears twice, the last one wins. A malformed directive makes the call a 400.
//
// Pure functions; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace uppzy::mock {

// One scripted answer. Small on purpose: scripts are stored per request.
struct ScriptStep {
  enum class Kind : uint8_t {
    kOk,          // normal behaviour (for a poll: the ready-time based answer)
    kProcessing,  // poll: answer "processing"
    kCompleted,   // poll: complete now with the echo answer
    kFailed,      // poll: fail now
    kStatus,      // answer `status` with a JSON error body
    kHang,        // no answer; the connection is held, then closed after the hang limit
    kReset,       // close the connection without any response
    kGarbage,     // 200 with a body that is not JSON
    kHuge,        // 200 with a 20 MiB body
    kNul,         // a hostile 2xx carrying NUL (see above)
    kDotDot,      // submit: request_id ".."
  };
  Kind kind = Kind::kOk;
  uint16_t status = 0;         // kStatus only
  int32_t retry_after_s = -1;  // kStatus only: the Retry-After header value; -1 means no header
  bool nul_error = false;      // kStatus only: the error text carries a NUL

  bool operator==(const ScriptStep&) const = default;
};

using Script = std::vector<ScriptStep>;

// The directives found in one text. Absent directives are std::nullopt.
struct Directives {
  std::optional<Script> submit;
  std::optional<Script> poll;
  std::optional<Script> feedback;
  std::optional<Script> close;
  std::optional<int64_t> ready_ms;
  std::optional<std::string> fail;
};

// Parses one step ("ok", "503", "429:7", ...). Returns std::nullopt if it is not a valid step.
std::optional<ScriptStep> ParseScriptStep(std::string_view token);

// Parses every directive in `text`. On a malformed directive (an unknown step, an empty list, a
// non-numeric or negative ready time, an empty fail reason) returns std::nullopt and sets `*error` to a
// short description that names the directive key, never the rest of the text.
std::optional<Directives> ParseDirectives(std::string_view text, std::string* error);

// The step at position `index` of a script that ends in `ok` forever (submit, feedback, close).
ScriptStep StepThenOk(const Script& script, uint64_t index);
// The step at position `index` of a script whose last step repeats (poll). Requires a non-empty script.
ScriptStep StepThenLast(const Script& script, uint64_t index);

}  // namespace uppzy::mock
