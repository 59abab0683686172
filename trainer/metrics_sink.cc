// The metrics sink (metrics_sink.h).
#include "trainer/metrics_sink.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "trainer/metrics_tensorboard.h"

namespace tessera {

std::string DurationText(double seconds) {
  const int64_t s = std::isfinite(seconds) && seconds > 0 ? std::llround(seconds) : 0;
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

absl::StatusOr<std::unique_ptr<MetricsSink>> MetricsSink::Open(const Config& config, bool is_logger) {
  std::unique_ptr<MetricsSink> sink(new MetricsSink(config.train, is_logger));
  if (!is_logger) return sink;
  const std::string& dir = config.train.run_dir;
  TS_RETURN_IF_ERROR(MakeDirs(dir));
  TS_RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.yaml", ConfigToYaml(config)));
  sink->jsonl_.open(dir + "/metrics.jsonl", std::ios::trunc);
  if (!sink->jsonl_)
    return absl::PermissionDeniedError(absl::StrCat("cannot write '", dir, "/metrics.jsonl'"));
  if (config.train.tensorboard) {
    TS_ASSIGN_OR_RETURN(sink->tensorboard_, tensorboard::TensorBoardWriter::Open(dir));
  }
  return sink;
}

void MetricsSink::Start(int64_t first_step) {
  first_step_ = first_step;
  start_ = std::chrono::steady_clock::now();
}

bool MetricsSink::AtInterval(const StepMetrics& m) const {
  return m.step % train_.log_every == 0 || m.step == m.total_steps;
}

std::string MetricsSink::ProgressText(const StepMetrics& m) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = m.step - first_step_;
  const double eta =
      done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(m.total_steps - m.step) : 0;
  return absl::StrCat(" | elapsed ", DurationText(elapsed), " | eta ", DurationText(eta));
}

absl::Status MetricsSink::MaybeLog(const StepMetrics& m) {
  if (!is_logger_ || !ShouldLog(m)) return absl::OkStatus();
  jsonl_ << MetricsJsonLine(m) << std::flush;
  TS_LOG(INFO) << MetricsConsoleLine(m) << ProgressText(m);
  if (tensorboard_) TS_RETURN_IF_ERROR(WriteStepScalars(*tensorboard_, m));
  return absl::OkStatus();
}

void MetricsSink::RecordDiverged(const StepMetrics& m) {
  if (is_logger_) jsonl_ << MetricsJsonLine(m) << std::flush;
}

absl::Status MetricsSink::Close() { return tensorboard_ ? tensorboard_->Flush() : absl::OkStatus(); }

}  // namespace tessera
