// ModelPipelineStage: the model chunks behind the pipeline executor's actions.
#include "model/pipeline_stage.h"

#include <torch/torch.h>

#include "data/batch_tensors.h"

namespace tessera {

ModelPipelineStage::ModelPipelineStage(std::vector<Transformer> chunks, int64_t micro_batch, int64_t seq_len,
                                       int64_t dim, int sequence_parallel_ranks, torch::Device device,
                                       std::function<void(int)> on_last_weight_gradients)
    : chunks_(std::move(chunks)),
      micro_batch_(micro_batch),
      seq_len_(seq_len),
      dim_(dim),
      sequence_parallel_ranks_(sequence_parallel_ranks),
      device_(device),
      on_last_weight_gradients_(std::move(on_last_weight_gradients)) {}

void ModelPipelineStage::SetBatch(const data::LocalBatch* batch, int64_t num_microbatches) {
  batch_ = batch;
  num_microbatches_ = num_microbatches;
}

at::Tensor ModelPipelineStage::Forward(int chunk, int mb, const at::Tensor& input) {
  Transformer& model = chunks_[chunk];
  TORCH_CHECK(batch_ != nullptr, "pipeline stage: no batch set");
  const bool embeds = model->shard_options().has_embedding;
  const bool head = model->shard_options().has_head;
  at::Tensor x = input;
  data::Batch micro;
  if (embeds || head) micro = data::ToTrainingBatch(*batch_, mb * micro_batch_, micro_batch_);
  if (embeds) x = micro.inputs.to(device_, /*non_blocking=*/true);
  if (!head) return model->StageForward(x);
  // The step's loss is the mean over micro-batches: each contributes 1/m of its mean.
  at::Tensor loss = model->StageLoss(x, micro.targets.to(device_, /*non_blocking=*/true));
  return num_microbatches_ == 1 ? loss : loss / static_cast<double>(num_microbatches_);
}

std::vector<int64_t> ModelPipelineStage::ActivationShape(int chunk) const {
  return {micro_batch_, seq_len_ / sequence_parallel_ranks_, dim_};
}

std::vector<at::Tensor> ModelPipelineStage::ChunkParameters(int chunk) const {
  return chunks_[chunk]->parameters();
}

void ModelPipelineStage::BeforeLastWeightGradients(int chunk) {
  if (on_last_weight_gradients_) on_last_weight_gradients_(chunk);
}

}  // namespace tessera
