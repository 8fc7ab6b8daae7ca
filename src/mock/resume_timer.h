// Resumes suspended libmicrohttpd connections when their delayed answer is due (--latency-ms, `hang`),
// on one timer thread, so that a delayed answer never blocks a server thread.
//
// Thread-safety: Schedule() is thread-safe. Start() and StopAndFireAll() must not race each other.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

struct MHD_Connection;

namespace uppzy::mock {

class ResumeTimer {
 public:
  using Clock = std::chrono::steady_clock;
  // `fire` is called on the timer thread (or in StopAndFireAll) once per scheduled connection, outside
  // any lock of this class.
  explicit ResumeTimer(std::function<void(MHD_Connection*)> fire);
  ~ResumeTimer();  // calls StopAndFireAll()

  void Start();

  // Arranges for `fire(connection)` at `due`. Returns false, and arranges nothing, once stopped: the
  // caller must then resume the connection itself.
  bool Schedule(Clock::time_point due, MHD_Connection* connection);

  // Stops the thread, then fires every entry still pending, at once. Afterwards Schedule() returns false.
  void StopAndFireAll();

 private:
  struct Entry {
    Clock::time_point due;
    uint64_t seq;  // keeps equal due times in scheduling order
    MHD_Connection* connection;
    bool operator>(const Entry& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };

  void Run();

  const std::function<void(MHD_Connection*)> fire_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue_;  // guarded by mu_
  uint64_t next_seq_ = 0;                                                      // guarded by mu_
  bool stopped_ = false;                                                       // guarded by mu_
  std::thread thread_;
};

}  // namespace uppzy::mock
