// Translation of pqxx's exceptions into StoreError, shared by every store class in src/store.
#pragma once

#include <pqxx/pqxx>
#include <string>

#include "uppzy/store.h"

namespace uppzy::store {

// True for SQLSTATE classes caused by the environment: 08 connection exception, 57 operator intervention
// (shutdown, terminated backend), 40 serialization failure / deadlock, 53 insufficient resources, and
// 55P03 lock_not_available (lock_timeout: another session held a row; trying later can succeed).
inline bool TransientSqlState(const std::string& s) {
  return s.rfind("08", 0) == 0 || s.rfind("57", 0) == 0 || s.rfind("40", 0) == 0 || s.rfind("53", 0) == 0 ||
         s == "55P03";
}

// The first line of a server message. libpq appends DETAIL lines, and a DETAIL such as "Failing row
// contains (...)" holds the row's values (message and answer text), which must never reach a log.
inline std::string PrimaryMessage(const char* what) {
  std::string s(what);
  s = s.substr(0, s.find('\n'));
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// Runs `fn`, translating pqxx's exceptions into StoreError. what() is the message's first line only.
template <typename Fn>
auto Translate(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const StoreError&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    throw StoreError("database connection lost: " + PrimaryMessage(e.what()), true, "08006");
  } catch (const pqxx::in_doubt_error& e) {
    throw StoreError("database commit in doubt: " + PrimaryMessage(e.what()), true);
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    throw StoreError(PrimaryMessage(e.what()), TransientSqlState(state), state);
  } catch (const std::exception& e) {
    throw StoreError(PrimaryMessage(e.what()), false);
  }
}

}  // namespace uppzy::store
