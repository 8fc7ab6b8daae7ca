// The files of src/dashboard/assets/, compiled into the binary by cmake/embed_files.cmake (see
// CMakeLists.txt), so the dashboard serves them with no files at run time. Use assets.h, which knows
// what each file is; this is only the generated table.
#pragma once

#include <string>
#include <vector>

namespace uppzy::dashboard {

struct EmbeddedAsset {
  std::string name;  // the file name, e.g. "app.js"
  std::string text;  // its bytes, exactly
};

// Sorted by name. Thread-safe (built once, on first use).
const std::vector<EmbeddedAsset>& EmbeddedAssets();

}  // namespace uppzy::dashboard
