// store_floor: benchmark scenario S4, "the database floor". It drives the queued rows of
// uppzy.chat_jobs through the same three statements the worker runs for a job on the happy path (the
// claim, the accepted write and the completed write: Store::JobsClaimQueued and
// Store::JobsApplyWrites with WriteAccepted then WriteCompleted), with no HTTP in between, on one
// connection, batched the way the coordinator batches (claims of UPPZY_CLAIM_BATCH = 500 rows, one
// guarded UPDATE per batch of writes). What it reaches is the most the worker could reach with the
// same SQL on the same database: S1 divided by this is how close the whole worker gets to it.
//
//   store_floor --database-url URL [--batch 500] [--lease-ms 30000] [--worker ID]
//
// It prints one JSON line: {"jobs": N, "seconds": S, "jobs_per_s": R, "claims": C, "apply_calls": A,
// "refused": F}. Timing runs from just before the first claim to just after the last write commits.
// Exit status: 0 when every claimed job was completed, 1 otherwise (a refused write, a database
// error), 2 on a usage error.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "uppzy/job_write.h"
#include "uppzy/store.h"

namespace {

struct Options {
  std::string database_url;
  int batch = 500;
  int lease_ms = 30000;
  std::string worker = "store-floor";
};

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--database-url") {
      o->database_url = v;
    } else if (a == "--batch") {
      o->batch = std::atoi(v.c_str());
    } else if (a == "--lease-ms") {
      o->lease_ms = std::atoi(v.c_str());
    } else if (a == "--worker") {
      o->worker = v;
    } else {
      return false;
    }
  }
  return !o->database_url.empty() && o->batch > 0 && o->lease_ms > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!Parse(argc, argv, &opt)) {
    std::fprintf(stderr, "usage: store_floor --database-url URL [--batch N] [--lease-ms MS] [--worker ID]\n");
    return 2;
  }
  using Steady = std::chrono::steady_clock;
  try {
    uppzy::Store store(opt.database_url);
    long long jobs = 0, claims = 0, apply_calls = 0, refused = 0;
    // What the mock answers for a completed request, minus answer/status/request_id/session_id.
    const std::string result_json = R"({"confidence_level":"high","confidence_score":0.93})";
    const auto t0 = Steady::now();
    while (true) {
      std::vector<uppzy::ClaimedJob> claimed = store.JobsClaimQueued(opt.worker, opt.lease_ms, opt.batch);
      ++claims;
      if (claimed.empty()) break;
      const uppzy::TimePoint now = uppzy::Clock::now();
      std::vector<uppzy::HeldJob> held;
      std::vector<uppzy::JobWrite> accepted;
      held.reserve(claimed.size());
      accepted.reserve(claimed.size());
      for (const auto& c : claimed) {
        uppzy::HeldJob h;
        h.id = c.id;
        h.row_state = c.state;
        h.attempt = c.attempt;
        h.polls = c.polls;
        const std::string request_id = "req_floor_" + std::to_string(c.id);
        accepted.push_back(uppzy::WriteAccepted(h, request_id, now, now + std::chrono::seconds(45)));
        h.row_state = uppzy::JobState::kPolling;
        h.request_id = request_id;
        h.polls = 0;
        held.push_back(std::move(h));
      }
      uppzy::ApplyResult r1 = store.JobsApplyWrites(opt.worker, accepted);
      ++apply_calls;
      refused += static_cast<long long>(r1.refused.size());
      std::vector<uppzy::JobWrite> completed;
      completed.reserve(held.size());
      for (size_t i = 0; i < held.size(); ++i) {
        held[i].polls = 1;
        completed.push_back(uppzy::WriteCompleted(held[i], "echo: " + claimed[i].message, result_json));
      }
      uppzy::ApplyResult r2 = store.JobsApplyWrites(opt.worker, completed);
      ++apply_calls;
      refused += static_cast<long long>(r2.refused.size());
      jobs += static_cast<long long>(r2.applied.size());
    }
    const double seconds = std::chrono::duration<double>(Steady::now() - t0).count();
    std::printf(
        "{\"jobs\": %lld, \"seconds\": %.6f, \"jobs_per_s\": %.1f, \"claims\": %lld, \"apply_calls\": %lld, "
        "\"refused\": %lld}\n",
        jobs, seconds, seconds > 0 ? static_cast<double>(jobs) / seconds : 0.0, claims, apply_calls, refused);
    return refused == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "store_floor: %s\n", e.what());
    return 1;
  }
}
