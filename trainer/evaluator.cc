// The evaluator (evaluator.h).
#include "trainer/evaluator.h"

#include <torch/torch.h>

#include <cmath>

#include "core/host_sync.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "parallel/pipeline/schedule.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Create(const TrainConfig& train,
                                                             std::shared_ptr<const data::SampleStream> val,
                                                             ModelPipelineStage& stage,
                                                             parallel::ProcessGrid& grid,
                                                             int64_t virtual_stages, torch::Device device) {
  std::unique_ptr<Evaluator> evaluator(new Evaluator(train, std::move(val), stage, grid, device));
  if (!evaluator->val_) return evaluator;
  const int64_t dp = grid.topology().dims().dp, dp_rank = grid.coords().dp;
  evaluator->microbatches_ = train.eval_batches > dp_rank ? (train.eval_batches - dp_rank + dp - 1) / dp : 0;
  if (evaluator->microbatches_ == 0) return evaluator;  // fewer eval batches than DP ranks
  TS_ASSIGN_OR_RETURN(parallel::pipeline::Schedule schedule,
                      parallel::pipeline::ForwardOnlySchedule(grid.topology().dims().pp,
                                                              evaluator->microbatches_, virtual_stages));
  TS_ASSIGN_OR_RETURN(evaluator->executor_,
                      parallel::pipeline::PipelineExecutor::Create(
                          std::move(schedule), grid.pp(), stage, device,
                          parallel::pipeline::ExecutorOptions{/*synchronize_timing=*/false}));
  return evaluator;
}

bool Evaluator::Due(int64_t step) const {
  return train_.eval_every > 0 && val_ && ((step + 1) % train_.eval_every == 0 || step + 1 == train_.steps);
}

absl::Status Evaluator::MaybeEvaluate(int64_t step, StepMetrics* metrics) {
  if (!Due(step)) return absl::OkStatus();
  TS_ASSIGN_OR_RETURN(metrics->eval_loss, Evaluate());
  return absl::OkStatus();
}

absl::Status Evaluator::ReadBatch() {
  const int64_t dp = grid_.topology().dims().dp, dp_rank = grid_.coords().dp;
  const int64_t rows = train_.micro_batch, sample_tokens = val_->sample_tokens();
  batch_.first_sample = dp_rank * rows;
  batch_.rows = microbatches_ * rows;
  batch_.sample_tokens = sample_tokens;
  batch_.tokens.resize(static_cast<size_t>(batch_.rows * sample_tokens));
  for (int64_t i = 0; i < microbatches_; ++i) {
    const int64_t b = dp_rank + i * dp;
    for (int64_t r = 0; r < rows; ++r) {
      TS_RETURN_IF_ERROR(val_->Read(b * rows + r, batch_.tokens.data() + (i * rows + r) * sample_tokens));
    }
  }
  batch_read_ = true;
  return absl::OkStatus();
}

absl::StatusOr<double> Evaluator::Evaluate() {
  if (!val_) return std::nan("");
  torch::NoGradGuard no_grad;
  // Zero 3: the DP ranks evaluate different numbers of micro-batches (eval_batches need not be
  // a multiple of dp), so the units are gathered once for the whole evaluation.
  if (gatherer_ != nullptr) gatherer_->HoldAll();
  TS_CHECK(gatherer_ == nullptr || gatherer_->AllGathered()) << "evaluation would read weights not gathered";
  absl::StatusOr<double> loss = EvaluateHeld();
  if (gatherer_ != nullptr) gatherer_->EndHold();
  return loss;
}

absl::StatusOr<double> Evaluator::EvaluateHeld() {
  double sum = 0;
  if (executor_) {
    if (!batch_read_) TS_RETURN_IF_ERROR(ReadBatch());
    // Each micro-batch's own mean loss (unscaled: one "micro-batch" of the step), summed.
    stage_.SetBatch(&batch_, 1);
    absl::StatusOr<double> loss = executor_->RunStep();
    stage_.SetBatch(nullptr, 1);
    if (!loss.ok()) return loss.status();
    sum = *loss;
  }
  torch::Tensor total = torch::full({1}, sum, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(total, parallel::ReduceOp::kSum));  // the last stage holds it
  TS_RETURN_IF_ERROR(grid_.dp().AllReduce(total, parallel::ReduceOp::kSum));
  // Context-parallel ranks evaluate the same micro-batches, each on its share of the tokens.
  if (grid_.topology().dims().cp > 1) {
    TS_RETURN_IF_ERROR(grid_.cp().AllReduce(total, parallel::ReduceOp::kAvg));
  }
  return HostRead<double>(total) / static_cast<double>(train_.eval_batches);
}

}  // namespace tessera
