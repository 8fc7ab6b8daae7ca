// The one error type every store throws (Store, DeliveryStore, OpsStore, DashboardStore and the worker
// store interfaces of worker_store.h), so callers decide "reconnect and retry" or "give up" without
// knowing pqxx. Plain value type; thread-compatible.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace uppzy {

// transient() is true when the cause is the environment (connection lost, server restarting,
// serialization failure, deadlock): reconnecting and trying again can succeed. Other errors
// (constraint violations, bad SQL) are not transient. sqlstate() is PostgreSQL's code, or "".
class StoreError : public std::runtime_error {
 public:
  StoreError(const std::string& what, bool transient, std::string sqlstate = {})
      : std::runtime_error(what), transient_(transient), sqlstate_(std::move(sqlstate)) {}
  bool transient() const { return transient_; }
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  bool transient_;
  std::string sqlstate_;
};

}  // namespace uppzy
