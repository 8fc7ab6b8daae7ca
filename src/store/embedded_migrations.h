// The migrations/ files, compiled into the binary by cmake/embed_files.cmake.
#pragma once

#include <string>
#include <vector>

namespace uppzy::store {

struct EmbeddedMigration {
  std::string name;  // e.g. "0001_chat_jobs.sql"
  std::string sql;
};

// Sorted by name.
const std::vector<EmbeddedMigration>& EmbeddedMigrations();

}  // namespace uppzy::store
