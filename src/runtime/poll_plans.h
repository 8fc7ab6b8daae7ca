// PollPlans: each site's own polling, published by Maintenance (which reads the sites' settings and
// refits their answer-time estimates) and read by the engine for every poll decision: the policy with
// the site's overrides from uppzy.sites, and its poll plan when it polls adaptively.
//
// Thread-safe: Publish() from one thread (maintenance), Snapshot() from any (the engine, once per
// pass). A snapshot is immutable and stays valid while held, so the engine reads it without a lock.
// Nothing here throws except std::bad_alloc.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "uppzy/policy.h"
#include "uppzy/poll_schedule.h"

namespace uppzy::runtime {

class PollPlans {
 public:
  struct Site {
    Policy policy;  // the worker's, with the site's poll_interval_ms, poll_timeout_ms, poll_target_delay_ms
    PollPlan plan;  // adaptive() only when the site polls adaptively and has enough answers
  };
  // site_id -> its polling; a site not here uses the worker's policy and the fixed tick.
  using Map = std::map<std::string, Site>;

  void Publish(Map plans) {
    auto next = std::make_shared<const Map>(std::move(plans));
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(next);
  }

  std::shared_ptr<const Map> Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }

  // The polling of `site` in `snapshot`, or null (the worker's policy, the fixed tick).
  static const Site* Find(const std::shared_ptr<const Map>& snapshot, const std::string& site) {
    if (!snapshot) return nullptr;
    const auto it = snapshot->find(site);
    return it == snapshot->end() ? nullptr : &it->second;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Map> current_ = std::make_shared<const Map>();
};

}  // namespace uppzy::runtime
