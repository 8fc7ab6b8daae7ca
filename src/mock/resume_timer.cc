#include "mock/resume_timer.h"

#include <utility>

namespace uppzy::mock {

ResumeTimer::ResumeTimer(std::function<void(MHD_Connection*)> fire) : fire_(std::move(fire)) {}

ResumeTimer::~ResumeTimer() { StopAndFireAll(); }

void ResumeTimer::Start() {
  {
    std::lock_guard lock(mu_);
    stopped_ = false;
  }
  thread_ = std::thread([this] { Run(); });
}

bool ResumeTimer::Schedule(Clock::time_point due, MHD_Connection* connection) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return false;
    wake = queue_.empty() || due < queue_.top().due;
    queue_.push(Entry{due, next_seq_++, connection});
  }
  if (wake) cv_.notify_one();
  return true;
}

void ResumeTimer::StopAndFireAll() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::vector<MHD_Connection*> rest;
  {
    std::lock_guard lock(mu_);
    while (!queue_.empty()) {
      rest.push_back(queue_.top().connection);
      queue_.pop();
    }
  }
  for (MHD_Connection* c : rest) fire_(c);
}

void ResumeTimer::Run() {
  std::vector<MHD_Connection*> due;
  std::unique_lock lock(mu_);
  while (!stopped_) {
    if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    }
    Clock::time_point now = Clock::now();
    if (Clock::time_point next = queue_.top().due; next > now) {
      cv_.wait_until(lock, next);  // a copy: a push while waiting moves the top
      continue;
    }
    while (!queue_.empty() && queue_.top().due <= now) {
      due.push_back(queue_.top().connection);
      queue_.pop();
    }
    lock.unlock();
    for (MHD_Connection* c : due) fire_(c);
    due.clear();
    lock.lock();
  }
}

}  // namespace uppzy::mock
