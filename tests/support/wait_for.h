// WaitFor: how a test waits for something to become true. It polls the condition until it holds or a
// deadline passes, so a test neither sleeps longer than it must nor fails on a slow machine (or under
// ThreadSanitizer) because a fixed sleep was too short. Header-only, so every test executable can use
// it, also those that link one module only (core_*, upstream_*, mock_*). Thread-safe if `cond` is.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace uppzy::test {

// Polls `cond` every `every` until it holds or `timeout` passes; returns true if it held (it is asked
// once more at the deadline).
inline bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds every = std::chrono::milliseconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(every);
  }
  return cond();
}

}  // namespace uppzy::test
