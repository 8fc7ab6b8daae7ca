// OverviewSnapshots: the /api/overview answer, computed in the background (see below). Thread-safe:
// Get() and Invalidate() are called from the request threads; Start() and Stop() from one thread.
// Get() rethrows the StoreError of Compute/Patch when it has to compute itself.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "uppzy/log.h"

namespace uppzy::dashboard {

// The overview aggregates a day of finished jobs: with a million finished rows that is 0.6 s of
// database work when they span a week, 3 s when all of them finished within the day
// (docs/benchmarks.md), far more than a page may wait. So one background thread
// computes it and every request is answered from the latest snapshot (its "now" says when it was
// taken):
//   - while someone is watching (a request within the last minute) it is recomputed every
//     `min_interval`, or every 5 times its own computation time if that is longer, so it never keeps
//     the database busy more than a fifth of the time;
//   - nobody watching: once a minute, so the first page after a pause shows figures at most a minute
//     old at once and fresh ones at its next refresh;
//   - after an action (Invalidate) the thread recomputes at once; meanwhile each request gets the last
//     snapshot with the parts an action changes and that stay cheap at any size (unfinished states,
//     incidents, workers, feedback) read afresh (`patch`), marked "partial": true;
//   - with no snapshot yet, or when the last one is older than 90 s (the database was away), the
//     request computes a fresh one itself.
// min_interval 0: no thread; every request computes (scripts/bench-dashboard measures that).
class OverviewSnapshots {
 public:
  using Compute = std::function<std::string()>;                  // throws StoreError
  using Patch = std::function<std::string(const std::string&)>;  // throws StoreError

  OverviewSnapshots(Compute compute, Patch patch, std::chrono::milliseconds min_interval)
      : compute_(std::move(compute)), patch_(std::move(patch)), min_interval_(min_interval) {}
  ~OverviewSnapshots() { Stop(); }

  void Start() {
    if (min_interval_.count() > 0) thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::string Get() {
    if (min_interval_.count() == 0) return compute_();
    std::unique_lock lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    last_request_ = now;
    if (body_ && now - at_ < kMaxServedAge) {
      std::shared_ptr<const std::string> body = body_;
      if (gen_ != generation_) {
        cv_.notify_all();
        lock.unlock();
        return patch_(*body);
      }
      if (now - at_ >= Interval(now)) cv_.notify_all();
      return *body;
    }
    lock.unlock();
    return Refresh();
  }

  // Data changed (an action): the next answer is computed afresh.
  void Invalidate() {
    {
      std::lock_guard lock(mu_);
      ++generation_;
    }
    cv_.notify_all();
  }

 private:
  static constexpr auto kWatched = std::chrono::seconds(60);
  static constexpr auto kIdleInterval = std::chrono::seconds(60);
  static constexpr auto kMaxServedAge = std::chrono::seconds(90);

  // Requires mu_.
  std::chrono::steady_clock::duration Interval(std::chrono::steady_clock::time_point now) const {
    if (now - last_request_ >= kWatched) return kIdleInterval;
    return std::max<std::chrono::steady_clock::duration>(min_interval_, 5 * last_compute_);
  }

  std::string Refresh() {
    std::lock_guard compute(compute_mu_);  // one computation at a time
    uint64_t gen = 0;
    {
      std::lock_guard lock(mu_);
      // Computed by someone else while we waited for compute_mu_.
      if (body_ && gen_ == generation_ &&
          std::chrono::steady_clock::now() - at_ < std::chrono::milliseconds(200))
        return *body_;
      gen = generation_;
    }
    const auto start = std::chrono::steady_clock::now();
    auto body = std::make_shared<const std::string>(compute_());
    std::lock_guard lock(mu_);
    body_ = body;
    at_ = start;
    gen_ = gen;
    last_compute_ = std::chrono::steady_clock::now() - start;
    return *body;
  }

  void Loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      const auto due = [&] {
        return !body_ || gen_ != generation_ ||
               std::chrono::steady_clock::now() - at_ >= Interval(std::chrono::steady_clock::now());
      };
      if (!due()) {
        cv_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_ || due(); });
        continue;
      }
      lock.unlock();
      bool failed = false;
      try {
        Refresh();
      } catch (const std::exception& e) {
        LogEvent(spdlog::level::warn, "dashboard_overview_failed",
                 {{"error", std::string(e.what()).substr(0, std::string(e.what()).find('\n'))}});
        failed = true;
      }
      lock.lock();
      if (failed) cv_.wait_for(lock, std::chrono::seconds(5), [&] { return stopping_; });
    }
  }

  const Compute compute_;
  const Patch patch_;
  const std::chrono::milliseconds min_interval_;
  std::thread thread_;
  std::mutex compute_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::shared_ptr<const std::string> body_;
  std::chrono::steady_clock::time_point at_;
  uint64_t gen_ = 0;
  uint64_t generation_ = 1;
  std::chrono::steady_clock::time_point last_request_;
  std::chrono::steady_clock::duration last_compute_{};
};

}  // namespace uppzy::dashboard
