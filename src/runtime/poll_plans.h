// PollPlans: each site's poll plan (adaptive polling), published by Maintenance when it refits the
// sites' answer-time estimates and read by the engine for every poll decision.
//
// Thread-safe: Publish() from one thread (maintenance), Snapshot() from any (the engine, once per
// pass). A snapshot is immutable and stays valid while held, so the engine reads it without a lock.
// Nothing here throws except std::bad_alloc.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "uppzy/poll_schedule.h"

namespace uppzy::runtime {

class PollPlans {
 public:
  using Map = std::map<std::string, PollPlan>;  // site_id -> plan; a site without one polls on the tick

  void Publish(Map plans) {
    auto next = std::make_shared<const Map>(std::move(plans));
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(next);
  }

  std::shared_ptr<const Map> Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }

  // The plan of `site` in `snapshot`, or null (the fixed tick).
  static const PollPlan* Find(const std::shared_ptr<const Map>& snapshot, const std::string& site) {
    if (!snapshot) return nullptr;
    const auto it = snapshot->find(site);
    return it == snapshot->end() || !it->second.adaptive() ? nullptr : &it->second;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Map> current_ = std::make_shared<const Map>();
};

}  // namespace uppzy::runtime
