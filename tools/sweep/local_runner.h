// Runs a sweep on this machine, one run after another: each run's output goes to
// RUN_DIR/stdout.log (appended, after an attempt marker), its outcome to RUN_DIR/outcome.json.
// Runs whose outcome.json says completed are skipped, so rerunning an interrupted or partly
// failed sweep resumes it (a preempted run restarts from its checkpoint by itself).
//
// SIGINT, SIGTERM and SIGUSR1 sent to the sweep are passed on to the running run once (it runs
// in its own process group, so Ctrl-C reaches it only through the sweep: a second SIGINT would
// make the trainer exit without saving); the sweep records that run's outcome and stops.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/sweep/expansion.h"
#include "tools/sweep/run_command.h"
#include "tools/sweep/sweep_file.h"

namespace tessera::sweep {

struct LocalSweepSummary {
  int64_t skipped = 0;        // completed earlier
  int64_t completed = 0;      // completed now
  int64_t not_completed = 0;  // ran now with another outcome
  bool interrupted = false;   // a signal stopped the sweep; rerun it to go on
};

// Progress lines ("[sweep] run 3/8 ...") go to `progress`. Errors are the sweep's own (a run
// folder that cannot be created or written); a run's failure is its outcome.
absl::StatusOr<LocalSweepSummary> RunSweepLocally(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                                                  const LaunchSettings& settings, std::FILE* progress);

}  // namespace tessera::sweep
