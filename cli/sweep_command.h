// `tessera sweep`: runs, schedules and reports a hyper-parameter sweep (docs/sweeps.md). Takes
// the arguments after the command name and returns the exit code:
//   run (default)  0 every run completed (now or earlier), 1 some did not, 75 stopped by a
//                  signal (rerun to resume), 2 bad arguments or sweep file
//   --dry-run      0, or 2
//   --slurm        0 script written (and submitted with --submit), 1 sbatch failed, 2
//   --report       0, 1 the CSV could not be written, 2
//   --record-outcome RUN_DIR --exit-code N [--start UNIX] [--end UNIX] [--name RUN]
//                  classifies a finished run and writes RUN_DIR/outcome.json (the generated
//                  sbatch script calls it); 0, 1 not writable, 2
// trainer/main.cc dispatches here.
#pragma once

#include <string>
#include <vector>

namespace tessera::sweep {

int SweepCommand(const std::vector<std::string>& args);

}  // namespace tessera::sweep

// The usage lines for trainer/main.cc's usage literal.
#define TESSERA_SWEEP_COMMAND_USAGE                                                                    \
  "  sweep SWEEP.yaml [--dry-run] [--slurm [--submit] [--jobs-dir DIR]] [--report [--csv FILE]]\n"     \
  "                                              run a sweep of trainings one after another (or as\n"  \
  "                                              a Slurm job array), resume it, report its outcomes\n" \
  "                                              (docs/sweeps.md)\n"
