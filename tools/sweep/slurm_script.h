// `tessera sweep --slurm`: one sbatch job array script for a whole sweep, one array task per run,
// each task launched the way scripts/launch/slurm_train.sbatch launches a run (srun with
// --kill-on-bad-exit, one task per GPU, MASTER_ADDR = the first node, MASTER_PORT from the job
// id, SIGUSR1 120 s before the time limit, --requeue). Each task skips a run that completed
// earlier, appends the run's output to RUN_DIR/stdout.log, writes RUN_DIR/outcome.json through
// `tessera sweep --record-outcome`, and requeues itself when the run exits 75 (preempted with a
// checkpoint saved).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/sweep/expansion.h"
#include "tools/sweep/sweep_file.h"

namespace tessera::sweep {

struct SlurmScriptSettings {
  std::string tessera;   // the tessera binary on the cluster (absolute; TESSERA_BIN overrides at run time)
  std::string workdir;   // absolute: relative paths (runs_dir, base) resolve against it
  std::string jobs_dir;  // absolute: the script and the Slurm output files go here
  std::string generated_at;  // ISO time for the header
};

std::string SlurmArrayScript(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                             const SlurmScriptSettings& settings);

// Writes JOBS_DIR/NAME.sbatch (mode 0755) and returns its path.
absl::StatusOr<std::string> WriteSlurmArrayScript(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                                                  const SlurmScriptSettings& settings);

}  // namespace tessera::sweep
