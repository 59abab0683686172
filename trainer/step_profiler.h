// train.profile_step: LibTorch's profiler over one optimizer step, written as a Chrome trace to
// RUN_DIR/profile_step_N.json (with several ranks, profile_step_N_rankRRRRR.json on each).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "config/config.h"

namespace tessera {

class StepProfiler {
 public:
  StepProfiler(const TrainConfig& train, int rank, int world_size);
  // Runs `step_fn` for step `step` (0-based), under the profiler when it is train.profile_step.
  absl::Status Run(int64_t step, const std::function<absl::Status()>& step_fn) const;

 private:
  int64_t profile_step_;  // 1-based; 0 = never
  std::string trace_prefix_;
  std::string trace_suffix_;
};

}  // namespace tessera
