// The exact command of one run of a local sweep: `tessera train BASE --set ...` as one process,
// or under `mpirun -np RANKS` with the environment Open MPI needs on a workstation or in a
// container (the same as the tests use: tests/parallel/CMakeLists.txt): running as root
// allowed, oversubscription when there are more ranks than cores, and no CMA single-copy
// (containers often lack the ptrace rights it needs). Variables already set in the caller's
// environment are left alone and not repeated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/sweep/expansion.h"
#include "tools/sweep/sweep_file.h"

namespace tessera::sweep {

struct LaunchSettings {
  std::string tessera;            // the tessera binary (absolute)
  std::string mpirun = "mpirun";  // TESSERA_MPIRUN overrides
  int64_t cores = 1;              // of this machine
  bool root = false;
};

// This process's binary, TESSERA_MPIRUN, the core count and whether we run as root.
LaunchSettings LaunchSettingsFromEnvironment();

struct RunCommand {
  std::vector<std::string> env;   // NAME=VALUE added to the child's environment
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
};

RunCommand LocalRunCommand(const SweepSpec& spec, const SweepRun& run, const LaunchSettings& settings);

// POSIX shell quoting: the word unchanged when it is safe, else in single quotes.
std::string ShellQuote(const std::string& word);
// "env A=1 B=2 mpirun -np 4 ... tessera train ..." (the "env" part only when there is some),
// quoted so that it can be pasted into a shell.
std::string FormatCommand(const RunCommand& command);

}  // namespace tessera::sweep
