// Formatting of metrics. JSON numbers use %.9g so that losses round-trip for comparisons.
#include "trainer/metrics.h"

#include <ATen/DeviceAccelerator.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_text.h"

namespace tessera {

std::string MetricsJsonLine(const StepMetrics& m) {
  // 9 significant digits: a float32 loss reads back exactly; NaN and Infinity as Python writes them.
  auto number = [](double v) { return JsonNumberAllowNan(v, 9); };
  std::string line =
      absl::StrCat("{\"step\": ", m.step, ", \"loss\": ", number(m.loss), ", \"lr\": ", number(m.lr),
                   ", \"grad_norm\": ", number(m.grad_norm), ", \"tokens_per_s\": ", number(m.tokens_per_s),
                   ", \"mfu\": ", number(m.mfu), ", \"step_time_s\": ", number(m.step_time_s),
                   ", \"memory_mb\": ", number(m.memory_mb), ", \"data_wait_s\": ", number(m.data_wait_s),
                   ", \"skipped_steps\": ", m.skipped_steps);
  if (m.eval_loss) absl::StrAppend(&line, ", \"eval_loss\": ", number(*m.eval_loss));
  return line + "}\n";
}

std::string MetricsConsoleLine(const StepMetrics& m) {
  std::string line = absl::StrFormat(
      "step %*d/%d | loss %.4f | lr %.2e | grad_norm %.3f | %.0f tok/s | mfu %.1f%% | mem %.0f MiB | %.3f "
      "s/step",
      static_cast<int>(std::to_string(m.total_steps).size()), m.step, m.total_steps, m.loss, m.lr,
      m.grad_norm, m.tokens_per_s, 100.0 * m.mfu, m.memory_mb, m.step_time_s);
  if (m.eval_loss) absl::StrAppend(&line, absl::StrFormat(" | eval_loss %.4f", *m.eval_loss));
  return line;
}

}  // namespace tessera
