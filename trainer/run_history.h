// A run's logs continue across resumes. Before a loop that resumed from a checkpoint at step S
// appends to its run directory, TruncateRunHistory cuts metrics.jsonl and the TensorBoard event
// files back to the history that checkpoint continues (step_lineage.h): the records of steps
// <= S stay, everything after S (written by the attempt that was stopped, or before a rollback)
// goes, so `tessera plot` and TensorBoard show one curve with every step once. Each file is
// rewritten atomically (temporary file + rename) and only when something is dropped.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/step_lineage.h"

namespace tessera {

// metrics.jsonl: one JSON object per line with an integer "step". A missing file is an empty
// history. Lines that do not parse, or have no numeric "step" (a torn last line), are dropped
// and counted as unreadable.
absl::StatusOr<TrimCounts> TruncateMetricsJsonl(const std::string& path, int64_t last_step);

// Both logs of `run_dir`: RUN_DIR/metrics.jsonl and RUN_DIR/events.out.tfevents.*. Returns a
// line for the log ("cut back to step 40: metrics.jsonl kept 40 records, dropped 7; ...").
absl::StatusOr<std::string> TruncateRunHistory(const std::string& run_dir, int64_t last_step);

}  // namespace tessera
