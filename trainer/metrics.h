// Per-step training metrics: the record, its JSON line for metrics.jsonl, its console line, and
// the process memory figures that go with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <torch/types.h>

namespace tessera {

struct StepMetrics {
  int64_t step = 0;  // 1-based count of completed optimizer steps
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double mfu = 0;  // fraction of peak, 0..1; 0 when the peak is unknown
  double step_time_s = 0;
  double memory_mb = 0;       // device memory allocated (CUDA) or resident set size (CPU)
  double data_wait_s = 0;     // seconds the step waited for the loader (should be ~0)
  int64_t skipped_steps = 0;  // updates skipped so far by the loss-spike / NaN guard
  std::optional<double> eval_loss;
};

std::string MetricsJsonLine(const StepMetrics& m);
std::string MetricsConsoleLine(const StepMetrics& m);
// Memory in use now, MiB: CUDA allocator's allocated bytes for CUDA devices, else process RSS.
double MemoryInUseMb(torch::Device device);
// The peak so far, MiB: the CUDA allocator's peak allocated bytes, or the process's peak
// resident set (VmHWM) on the CPU.
double PeakMemoryMb(torch::Device device);

}  // namespace tessera
