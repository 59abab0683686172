// Logs a StepMetrics record to TensorBoard: one event per step holding one scalar per metric.
// The tags are exactly the keys of the step's metrics.jsonl line (MetricsJsonLine) except
// "step", with the same values, so the two logs of a run can be compared one to one:
//   loss, lr, grad_norm, tokens_per_s, mfu, step_time_s, memory_mb, data_wait_s, skipped_steps,
//   and eval_loss when the step has one.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "trainer/metrics.h"
#include "trainer/tensorboard/tensorboard_writer.h"

namespace tessera {

using tensorboard::TensorBoardWriter;

// The (tag, value) pairs of one step, in the order of MetricsJsonLine's keys.
std::vector<std::pair<std::string, double>> StepScalars(const StepMetrics& m);

// Writes StepScalars(m) at step m.step, stamped with the current wall time. Buffered: the
// writer flushes on its own schedule (TensorBoardWriterOptions) and when it is destroyed.
absl::Status WriteStepScalars(TensorBoardWriter& writer, const StepMetrics& m);

}  // namespace tessera
