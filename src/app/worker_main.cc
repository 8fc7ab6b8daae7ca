// uppzy-worker: wires the process environment to the command line. Everything else is in the library.
#include <iostream>

#include "cli/cli.h"

int main(int argc, char** argv) {
  return uppzy::cli::RunCli(argc, argv, uppzy::ProcessEnv(), std::cout, std::cerr);
}
