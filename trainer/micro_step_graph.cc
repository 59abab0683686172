// The captured micro-step (micro_step_graph.h).
#include "trainer/micro_step_graph.h"

#include <torch/torch.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "data/batch_tensors.h"

namespace tessera {

MicroStepGraph::MicroStepGraph(Transformer model, int64_t micro_batch, int64_t microbatches,
                               torch::Device device, std::unique_ptr<StepRecorder> recorder)
    : model_(std::move(model)),
      micro_batch_(micro_batch),
      microbatches_(microbatches),
      device_(device),
      recorder_(std::move(recorder)) {}

void MicroStepGraph::LoadMicroBatch(const data::LocalBatch& batch, int64_t index) {
  const data::Batch micro = data::ToTrainingBatch(batch, index * micro_batch_, micro_batch_);
  if (!static_inputs_.defined()) {
    static_inputs_ = torch::empty_like(micro.inputs, micro.inputs.options().device(device_));
    static_targets_ = torch::empty_like(micro.targets, micro.targets.options().device(device_));
  }
  // Into the same device memory every time: the captured kernels read these addresses. The
  // copies are queued like the eager step's .to(device, non_blocking).
  static_inputs_.copy_(micro.inputs, /*non_blocking=*/true);
  static_targets_.copy_(micro.targets, /*non_blocking=*/true);
}

torch::Tensor MicroStepGraph::MicroStep() {
  // The operations of ModelPipelineStage::Forward and the executor's backward at pp = 1, so a
  // replay computes what the eager micro-step computes.
  const at::AutoGradMode grad_mode(true);
  torch::Tensor loss = model_->StageLoss(static_inputs_, static_targets_);
  if (microbatches_ != 1) loss = loss / static_cast<double>(microbatches_);
  loss.backward();
  return loss.detach().reshape({}).to(at::kDouble);
}

absl::StatusOr<torch::Tensor> MicroStepGraph::RunStep(const data::LocalBatch& batch) {
  if (batch.rows != micro_batch_ * microbatches_) {
    return absl::InternalError(absl::StrCat("captured micro-step: a batch of ", batch.rows,
                                            " rows, expected ", microbatches_, " micro-batches of ",
                                            micro_batch_));
  }
  torch::Tensor loss_sum;
  try {
    for (int64_t mb = 0; mb < microbatches_; ++mb) {
      LoadMicroBatch(batch, mb);
      torch::Tensor loss;
      if (!captured_) {
        // Micro-batch 0 of the first step runs for real on the capture stream; the capture that
        // follows records the same work without running it.
        recorder_->WarmUp([&] { loss = MicroStep(); });
        recorder_->Capture([this] { static_loss_ = MicroStep(); });
        captured_ = true;
      } else {
        recorder_->Replay();
        ++replays_;
        loss = static_loss_.clone();  // the next replay rewrites static_loss_
      }
      loss_sum = loss_sum.defined() ? loss_sum + loss : loss;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("the micro-step as a CUDA graph (train.cuda_graphs; set it to false to run eagerly): ",
                     e.what_without_backtrace()));
  }
  return loss_sum;
}

}  // namespace tessera
