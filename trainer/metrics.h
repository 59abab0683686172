// Per-step training metrics: the record, its JSON line for metrics.jsonl and its console line
// (trainer/metrics_sink.h writes them; trainer/device.h measures the memory figures).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

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

}  // namespace tessera
