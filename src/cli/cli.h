// The `uppzy-worker` command line: one function per subcommand, wired by RunCli.
// Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.
// Not thread-safe (parses argv once, on the main thread).
#pragma once

#include <ostream>

#include "uppzy/config.h"

namespace uppzy::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

int RunCli(int argc, char** argv, const EnvLookup& env, std::ostream& out, std::ostream& err);

}  // namespace uppzy::cli
