// The spike/NaN guard and the divergence decision (divergence_guard.h).
#include "trainer/divergence_guard.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/exit_codes.h"
#include "core/logging.h"

namespace tessera {

DivergenceGuard::DivergenceGuard(const TrainConfig& train, bool logs) : train_(train), logs_(logs) {
  if (const char* env = std::getenv("TESSERA_FAULT_NAN_GRAD_STEPS")) {
    for (absl::string_view item : absl::StrSplit(env, ',', absl::SkipEmpty())) {
      int64_t step;
      if (absl::SimpleAtoi(item, &step)) fault_nan_steps_.insert(step);
    }
  }
}

bool DivergenceGuard::TakeInjectedFault(int64_t step) {
  return fault_nan_steps_.erase(step + 1) > 0;  // once per step number (a rollback re-runs steps)
}

double DivergenceGuard::RecentMean() const {
  double sum = 0;
  for (double v : recent_losses_) sum += v;
  return recent_losses_.empty() ? 0.0 : sum / static_cast<double>(recent_losses_.size());
}

double DivergenceGuard::SpikeThreshold() const {
  const double factor = train_.spike_factor;
  if (factor > 0 && recent_losses_.size() >= 10) return factor * RecentMean();
  return std::numeric_limits<double>::infinity();
}

bool DivergenceGuard::AcceptUpdate(int64_t step, StepMetrics* metrics) {
  const double loss = metrics->loss, grad_norm = metrics->grad_norm;
  const bool skip = !std::isfinite(loss) || !std::isfinite(grad_norm) || loss > SpikeThreshold();
  Record(step, skip, metrics);
  return !skip;
}

at::Tensor DivergenceGuard::SkipOnDevice(const at::Tensor& loss, const at::Tensor& grad_norm) const {
  // The threshold is the host's own double, so the comparison is AcceptUpdate's bit for bit.
  const at::Tensor skip =
      loss.isfinite().logical_not() | grad_norm.isfinite().logical_not() | loss.gt(SpikeThreshold());
  return skip.to(at::kDouble);
}

void DivergenceGuard::Record(int64_t step, bool skipped, StepMetrics* metrics) {
  const double loss = metrics->loss, grad_norm = metrics->grad_norm;
  if (skipped) {
    ++consecutive_skips_;
    metrics->skipped_steps = ++skipped_total_;
    if (logs_)
      TS_LOG(WARNING) << absl::StrFormat(
          "step %d: update skipped (loss %g, grad_norm %g%s); %d in a row", step + 1, loss, grad_norm,
          recent_losses_.empty() ? "" : absl::StrFormat(", running mean %g", RecentMean()),
          consecutive_skips_);
    return;
  }
  consecutive_skips_ = 0;
  metrics->skipped_steps = skipped_total_;
  recent_losses_.push_back(loss);
  if (recent_losses_.size() > 50) recent_losses_.pop_front();
}

DivergenceGuard::Verdict DivergenceGuard::AfterStep() {
  if (consecutive_skips_ <= train_.max_skips) return Verdict::kGoOn;
  if (train_.on_divergence == DivergencePolicy::kRollback && rollbacks_ < kMaxRollbacks) {
    ++rollbacks_;
    return Verdict::kRollBack;
  }
  return Verdict::kStop;
}

absl::Status DivergenceGuard::DivergedError(const StepMetrics& metrics, int64_t sample) const {
  return OnEveryRank(WithExitCode(
      absl::AbortedError(absl::StrFormat(
          "training diverged: %d updates in a row skipped (last loss %g, grad_norm %g; train.max_skips = "
          "%d): "
          "lower train.lr (now %g), raise train.warmup_steps, or check the data around sample %d",
          consecutive_skips_, metrics.loss, metrics.grad_norm, train_.max_skips, train_.lr, sample)),
      kExitDiverged));
}

void DivergenceGuard::SaveTo(LoopState* loop) const {
  loop->skipped_total = skipped_total_;
  loop->consecutive_skips = consecutive_skips_;
  loop->recent_losses = recent_losses_;
}

void DivergenceGuard::RestoreFrom(const LoopState& loop) {
  skipped_total_ = loop.skipped_total;
  consecutive_skips_ = loop.consecutive_skips;
  recent_losses_ = loop.recent_losses;
}

void DivergenceGuard::RestoreAfterRollback(const LoopState& loop) {
  const int64_t skipped_before = skipped_total_;
  RestoreFrom(loop);
  skipped_total_ = std::max(skipped_total_, skipped_before);
  consecutive_skips_ = 0;
}

}  // namespace tessera
