// The loss-spike and NaN guard, and what happens when training diverges (train.spike_factor,
// train.max_skips, train.on_divergence). Every rank holds one and decides alike: the figures it
// decides on (loss, gradient norm) are already all-reduced.
//
// A step whose loss or gradient norm is not finite, or whose loss exceeds spike_factor x the
// mean of the last 50 accepted losses (after 10 accepted steps), skips its update. The training
// loop decides on the device (SkipOnDevice) and books the decision once it has read the step's
// figures back (Record), before the next step's decision: the same rule on the same values as
// AcceptUpdate on the host. More than
// max_skips skips in a row is divergence: stop (exit code 4), or with on_divergence: rollback
// reload the newest checkpoint, at most kMaxRollbacks times, then stop.
//
// Fault injection for tests: TESSERA_FAULT_NAN_GRAD_STEPS=3,7 poisons the gradients of those
// steps (1-based) with NaN, once per step number.
#pragma once

#include <cstdint>
#include <deque>
#include <set>

#include <torch/types.h>

#include "absl/status/status.h"
#include "config/config.h"
#include "trainer/metrics.h"
#include "trainer/training_state.h"

namespace tessera {

class DivergenceGuard {
 public:
  static constexpr int kMaxRollbacks = 3;
  enum class Verdict { kGoOn, kRollBack, kStop };

  // `logs`: this rank prints the skip warnings (rank 0). Reads TESSERA_FAULT_NAN_GRAD_STEPS.
  DivergenceGuard(const TrainConfig& train, bool logs);

  // Whether step `step` (0-based) gets NaN gradients (fault injection); true once per step.
  bool TakeInjectedFault(int64_t step);
  // Whether step `step` (0-based) may apply its update; counts (and logs) a skip otherwise.
  // Sets metrics->skipped_steps.
  bool AcceptUpdate(int64_t step, StepMetrics* metrics);
  // AcceptUpdate's decision on the device, from the step's all-reduced loss and gradient norm
  // ({1} fp64 tensors): a {1} fp64 tensor, 1 to skip. Reads nothing back.
  at::Tensor SkipOnDevice(const at::Tensor& loss, const at::Tensor& grad_norm) const;
  // Books step `step`'s decision taken on the device, as AcceptUpdate does with its own
  // (counts and logs a skip, or keeps the loss for the spike test); sets metrics->skipped_steps.
  void Record(int64_t step, bool skipped, StepMetrics* metrics);
  // Whether one more skip would be divergence: the loop then reads the step's figures at once,
  // so that it stops or rolls back after that very step.
  bool NextSkipDiverges() const { return consecutive_skips_ >= train_.max_skips; }
  // After a step: go on, roll back (counted) or stop.
  Verdict AfterStep();
  // The divergence error (exit code 4, agreed by every rank) for the step of `metrics`;
  // `lr` and `sample` (the first sample of the step's batch) say what to do.
  absl::Status DivergedError(const StepMetrics& metrics, int64_t sample) const;

  // The loop's counters in a checkpoint.
  void SaveTo(LoopState* loop) const;
  void RestoreFrom(const LoopState& loop);
  // After a rollback: the checkpoint's counters, but skips are never uncounted and the run of
  // skips that caused it is over.
  void RestoreAfterRollback(const LoopState& loop);

 private:
  double RecentMean() const;
  // spike_factor x RecentMean(), or +inf while the spike test is off.
  double SpikeThreshold() const;

  TrainConfig train_;
  bool logs_;
  std::deque<double> recent_losses_;  // of accepted steps, for the spike test
  int64_t consecutive_skips_ = 0, skipped_total_ = 0;
  int rollbacks_ = 0;
  std::set<int64_t> fault_nan_steps_;
};

}  // namespace tessera
