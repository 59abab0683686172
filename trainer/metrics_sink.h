// Where the loop's step records go, and when: RUN_DIR/metrics.jsonl, the console line (with the
// run's elapsed time and an ETA) and TensorBoard's event file, all behind one ShouldLog. Only the
// logging rank (rank 0) writes; elsewhere the sink decides alike and writes nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "trainer/metrics.h"
#include "trainer/tensorboard/tensorboard_writer.h"

namespace tessera {

// "45s", "1m23s", "2h05m".
std::string DurationText(double seconds);

class MetricsSink {
 public:
  // On the logging rank: creates the run directory, writes the effective config to
  // RUN_DIR/config.yaml, starts RUN_DIR/metrics.jsonl afresh and opens the TensorBoard writer
  // (train.tensorboard).
  static absl::StatusOr<std::unique_ptr<MetricsSink>> Open(const Config& config, bool is_logger);

  // The loop starts at step `first_step` (0-based; later than 0 after a resume): the clock of
  // the elapsed time and the ETA starts now.
  void Start(int64_t first_step);
  // Every train.log_every-th step and the last one.
  bool AtInterval(const StepMetrics& m) const;
  // Whether a step's record is logged: AtInterval, the first step, and every step with an
  // evaluation.
  bool ShouldLog(const StepMetrics& m) const {
    return AtInterval(m) || m.step == 1 || m.eval_loss.has_value();
  }
  // Logs `m` if ShouldLog: metrics.jsonl, the console, TensorBoard.
  absl::Status MaybeLog(const StepMetrics& m);
  // The record of a step that ended in divergence (before stopping or rolling back): its
  // metrics.jsonl line only.
  void RecordDiverged(const StepMetrics& m);
  // Flushes TensorBoard's events.
  absl::Status Close();

 private:
  MetricsSink(const TrainConfig& train, bool is_logger) : train_(train), is_logger_(is_logger) {}
  // " | elapsed 1m23s | eta 4m10s" after step m.step.
  std::string ProgressText(const StepMetrics& m) const;

  TrainConfig train_;
  bool is_logger_;
  std::ofstream jsonl_;
  std::unique_ptr<tensorboard::TensorBoardWriter> tensorboard_;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tessera
