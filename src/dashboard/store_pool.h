// StorePool: at most N DashboardStore connections shared by the dashboard's request threads.
// Thread-safe. With() rethrows the StoreError of the function it runs; a caller waits while all N
// connections are in use.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "uppzy/dashboard_store.h"

namespace uppzy::dashboard {

class StorePool {
 public:
  StorePool(std::string url, int max) : url_(std::move(url)), max_(max < 1 ? 1 : max) {}

  // Runs fn(store) on a pooled connection. A connection that failed with a transient error is dropped
  // (the next call opens a new one); reads (`retry_transient`) are tried once more on a fresh one.
  template <typename Fn>
  auto With(Fn&& fn, bool retry_transient = true) -> decltype(fn(std::declval<DashboardStore&>())) {
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<DashboardStore> store = Take();
      try {
        if (!store) store = std::make_unique<DashboardStore>(url_);
        auto result = fn(*store);
        Give(std::move(store));
        return result;
      } catch (const StoreError& e) {
        if (e.transient()) {
          Give(nullptr);
          if (retry_transient && attempt == 0) continue;
        } else {
          Give(std::move(store));
        }
        throw;
      } catch (...) {
        Give(nullptr);
        throw;
      }
    }
  }

 private:
  std::unique_ptr<DashboardStore> Take() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_use_ < max_; });
    ++in_use_;
    if (idle_.empty()) return nullptr;
    auto s = std::move(idle_.back());
    idle_.pop_back();
    return s;
  }

  void Give(std::unique_ptr<DashboardStore> s) {
    {
      std::lock_guard lock(mu_);
      --in_use_;
      if (s) idle_.push_back(std::move(s));
    }
    cv_.notify_one();
  }

  const std::string url_;
  const int max_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_use_ = 0;
  std::vector<std::unique_ptr<DashboardStore>> idle_;
};

}  // namespace uppzy::dashboard
