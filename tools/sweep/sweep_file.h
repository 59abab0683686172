// A sweep file (docs/sweeps.md): a base config and the runs to make from it, as a grid of values,
// an explicit list, and random samples, plus how to launch each run (ranks, mpirun arguments,
// Slurm resources). This file reads and checks it; expansion.h turns it into runs.
//
// Every config key and value in a sweep file is checked against the config schema here, so a
// typo stops the sweep before anything runs, with the file and line. Whether a run's merged
// config is valid (a value out of range, heads that do not divide) is that run's own outcome
// (config_error), not an error of the sweep file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::sweep {

// One `key=value` for `tessera train --set`, with the sweep-file line it came from.
struct Override {
  std::string key;    // a config key, e.g. "train.lr"
  std::string value;  // YAML text, as `--set key=value` takes it
  int line = 0;       // 1-based line in the sweep file; 0 when generated
  bool operator==(const Override&) const = default;
};

// One key of `grid:` with its values, in file order.
struct GridAxis {
  std::string key;
  std::vector<Override> values;
  int line = 0;
};

enum class Distribution { kUniform, kLogUniform, kChoice };

// One key of `random.params`.
struct RandomParam {
  std::string key;
  Distribution distribution = Distribution::kUniform;
  double lo = 0;  // uniform, log_uniform: the closed range [lo, hi]
  double hi = 0;
  std::vector<std::string> choices;  // choice: YAML texts
  bool integer = false;              // the key is an integer: drawn values are rounded
  int line = 0;
};

// Resources of one array task of `tessera sweep --slurm` (key `slurm:`). Zero or empty means
// "derived from ranks" (nodes, ntasks_per_node, gpus_per_node) or "not set" (the rest).
struct SlurmOptions {
  int64_t nodes = 0;
  int64_t ntasks_per_node = 0;
  int64_t gpus_per_node = -1;  // -1: as many as tasks per node; 0: a CPU job
  int64_t cpus_per_task = 0;
  std::string time = "24:00:00";
  std::string partition;
  std::string account;
  int64_t max_parallel = 0;         // the array's %K: at most K runs at once; 0 = no limit
  std::vector<std::string> sbatch;  // extra sbatch options, e.g. "--qos=high"
  std::vector<std::string> setup;   // shell lines run before srun, e.g. "module load cuda"
  std::vector<std::string> srun;    // extra srun options, e.g. "--mpi=pmix" for CPU runs
};

struct SweepSpec {
  std::string path;                      // the sweep file, as given
  std::string name;                      // [A-Za-z0-9._-]+
  std::string base;                      // the base config: `base:` resolved against the sweep file's folder
  std::string runs_dir = "runs";         // runs go to RUNS_DIR/NAME/RUN (relative: to the working dir)
  int64_t ranks = 1;                     // processes per run; > 1 runs under mpirun (locally) or srun (Slurm)
  std::vector<std::string> mpirun_args;  // extra arguments of local mpirun runs
  std::vector<Override> common;          // `set:` applied to every run before its own keys
  std::vector<GridAxis> grid;
  std::vector<std::vector<Override>> list;
  int64_t random_samples = 0;
  uint64_t random_seed = 0;
  std::vector<RandomParam> random_params;
  SlurmOptions slurm;
};

// Reads and checks a sweep file. Errors name the file and line, and the key with a suggestion
// for a near miss ("sweep.yaml:7: grid: unknown key 'train.lrr' (did you mean 'train.lr'?)").
absl::StatusOr<SweepSpec> ReadSweepFile(const std::string& path);
// The same from text; `path` names it in messages and anchors a relative `base:`.
absl::StatusOr<SweepSpec> ParseSweepYaml(const std::string& yaml, const std::string& path);

}  // namespace tessera::sweep
