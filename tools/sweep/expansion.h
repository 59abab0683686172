// Turns a sweep file into its runs: first the grid's cartesian product (the first key outermost,
// the last varying fastest), then the list's entries in order, then the random samples; each run
// is the base config plus `set:` plus its own keys (later keys win). Runs are numbered in that
// order and named NAME-NNN_<short summary of its keys>; names, values and order depend only on
// the sweep file, so rerunning a sweep finds the same runs in the same folders.
//
// Random samples come from one SplitMix64 stream seeded by random.seed, drawn sample by sample
// and, within a sample, key by key in file order: raising random.samples keeps the earlier
// samples. Values are written with 4 significant digits (that text is the value used); integer
// keys are rounded to the nearest integer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/sweep/sweep_file.h"

namespace tessera::sweep {

struct SweepRun {
  int64_t index = 0;                // 0-based position in the sweep
  std::string name;                 // NAME-007_lr0.001_n_layers4
  std::string run_dir;              // RUNS_DIR/NAME/RUN
  std::string origin;               // "grid", "list" or "random"
  std::vector<Override> overrides;  // the run's own keys (without `set:` and train.run_dir)
};

absl::StatusOr<std::vector<SweepRun>> ExpandSweep(const SweepSpec& spec);

// The `--set` assignments of a run, in order: `set:`, the run's own keys, train.run_dir.
std::vector<std::string> RunAssignments(const SweepSpec& spec, const SweepRun& run);

// "lr=0.001 n_layers=4": the run's own keys by their last component, for tables.
std::string OverridesSummary(const SweepRun& run);

// The name suffix of a run with these keys: "lr0.001_n_layers4" (at most ~48 characters; only
// letters, digits and . + - _ so that it is safe in paths and shells).
std::string NameSuffix(const std::vector<Override>& overrides);

}  // namespace tessera::sweep
