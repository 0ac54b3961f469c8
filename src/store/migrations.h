#pragma once

#include <string_view>
#include <vector>

namespace segma::store {

// One numbered schema change, from src/store/migrations/NNNN_name.sql, embedded at build time.
struct Migration {
  int version;            // NNNN
  std::string_view name;  // "0001_init"
  std::string_view sql;   // one or more statements
};

// Every embedded migration, by ascending version (contiguous from 1). Shared by every Store
// implementation. Thread-safe.
const std::vector<Migration>& EmbeddedMigrations();

}  // namespace segma::store
