// StepMetrics -> TensorBoard scalars. Keep this list and MetricsJsonLine (metrics.cc) in step:
// tests/trainer/tensorboard_test.py checks that both logs of a run carry the same names and values.
#include "trainer/metrics_tensorboard.h"

namespace tessera {

std::vector<std::pair<std::string, double>> StepScalars(const StepMetrics& m) {
  std::vector<std::pair<std::string, double>> scalars = {
      {"loss", m.loss},
      {"lr", m.lr},
      {"grad_norm", m.grad_norm},
      {"tokens_per_s", m.tokens_per_s},
      {"mfu", m.mfu},
      {"step_time_s", m.step_time_s},
      {"memory_mb", m.memory_mb},
      {"data_wait_s", m.data_wait_s},
      {"skipped_steps", static_cast<double>(m.skipped_steps)},
  };
  if (m.eval_loss) scalars.emplace_back("eval_loss", *m.eval_loss);
  return scalars;
}

absl::Status WriteStepScalars(TensorBoardWriter& writer, const StepMetrics& m) {
  return writer.AddScalars(m.step, StepScalars(m));
}

}  // namespace tessera
