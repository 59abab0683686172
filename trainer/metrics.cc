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

namespace tessera {
namespace {

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity");
  return absl::StrFormat("%.17g", v);
}

}  // namespace

std::string MetricsJsonLine(const StepMetrics& m) {
  std::string line = absl::StrCat(
      "{\"step\": ", m.step, ", \"loss\": ", JsonNumber(m.loss), ", \"lr\": ", JsonNumber(m.lr),
      ", \"grad_norm\": ", JsonNumber(m.grad_norm), ", \"tokens_per_s\": ", JsonNumber(m.tokens_per_s),
      ", \"mfu\": ", JsonNumber(m.mfu), ", \"step_time_s\": ", JsonNumber(m.step_time_s),
      ", \"memory_mb\": ", JsonNumber(m.memory_mb), ", \"data_wait_s\": ", JsonNumber(m.data_wait_s),
      ", \"skipped_steps\": ", m.skipped_steps);
  if (m.eval_loss) absl::StrAppend(&line, ", \"eval_loss\": ", JsonNumber(*m.eval_loss));
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

double MemoryInUseMb(torch::Device device) {
  if (device.is_cuda()) {
    auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].current) / (1024.0 * 1024.0);
  }
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) /
         (1024.0 * 1024.0);
}

double PeakMemoryMb(torch::Device device) {
  if (device.is_cuda()) {
    auto stats = at::accelerator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0);
  }
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
  }
  return 0;
}

}  // namespace tessera
