// train.profile_step: LibTorch's profiler over one optimizer step, written as a Chrome trace to
// RUN_DIR/profile_step_N.json (with several ranks, profile_step_N_rankRRRRR.json on each). On a
// CUDA device the profiler is Kineto's, which records the GPU kernels themselves, and the log
// gets a summary: kernels launched, GPU busy time against the step's wall time, and the kernels
// that took the most GPU time.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "config/config.h"

namespace tessera {

class StepProfiler {
 public:
  StepProfiler(const TrainConfig& train, int rank, int world_size, torch::Device device);
  // Runs `step_fn` for step `step` (0-based), under the profiler when it is train.profile_step.
  absl::Status Run(int64_t step, const std::function<absl::Status()>& step_fn) const;

 private:
  absl::Status RunCuda(const std::string& trace, const std::function<absl::Status()>& step_fn) const;

  int64_t profile_step_;  // 1-based; 0 = never
  std::string trace_prefix_;
  std::string trace_suffix_;
  torch::Device device_;
  bool log_summary_;  // on rank 0 only
};

}  // namespace tessera
