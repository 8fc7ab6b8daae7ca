// Translation of pqxx's exceptions into StoreError, shared by every store class in src/store.
#pragma once

#include <pqxx/pqxx>
#include <string>

#include "uppzy/store.h"

namespace uppzy::store {

// True for SQLSTATE classes caused by the environment: 08 connection exception, 57 operator intervention
// (shutdown, terminated backend), 40 serialization failure / deadlock, 53 insufficient resources.
inline bool TransientSqlState(const std::string& s) {
  return s.rfind("08", 0) == 0 || s.rfind("57", 0) == 0 || s.rfind("40", 0) == 0 || s.rfind("53", 0) == 0;
}

// Runs `fn`, translating pqxx's exceptions into StoreError.
template <typename Fn>
auto Translate(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const StoreError&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    throw StoreError(std::string("database connection lost: ") + e.what(), true, "08006");
  } catch (const pqxx::in_doubt_error& e) {
    throw StoreError(std::string("database commit in doubt: ") + e.what(), true);
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    throw StoreError(e.what(), TransientSqlState(state), state);
  } catch (const std::exception& e) {
    throw StoreError(e.what(), false);
  }
}

}  // namespace uppzy::store
