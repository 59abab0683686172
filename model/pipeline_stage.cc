// ModelPipelineStage: the model chunks behind the pipeline executor's actions.
#include "model/pipeline_stage.h"

#include <torch/torch.h>

#include "data/batch_tensors.h"
#include "data/document_layout.h"
#include "parallel/context_parallel/chunks.h"
#include "parallel/tensor_parallel/mappings.h"  // GroupSize, GroupRank

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
      on_last_weight_gradients_(std::move(on_last_weight_gradients)) {
  parallel::Communicator* cp = chunks_.front()->shard_options().cp;
  context_parallel_ranks_ = parallel::GroupSize(cp);
  if (context_parallel_ranks_ > 1) {
    absl::StatusOr<parallel::ContextChunks> chunks =
        parallel::ContextChunks::Create(seq_len_, context_parallel_ranks_, parallel::GroupRank(cp));
    TORCH_CHECK(chunks.ok(), std::string(chunks.status().message()));
    context_index_ = torch::tensor(chunks->Positions(), torch::kLong);
  }
}

void ModelPipelineStage::SetBatch(const data::LocalBatch* batch, int64_t num_microbatches) {
  batch_ = batch;
  num_microbatches_ = num_microbatches;
}

void ModelPipelineStage::SetDocuments(int64_t eod_token, bool mask, bool reset_positions) {
  TORCH_CHECK(eod_token >= 0 || !(mask || reset_positions),
              "packed documents need the end-of-document token (data.eod_token)");
  eod_token_ = eod_token;
  document_mask_ = mask;
  reset_positions_ = reset_positions;
}

at::Tensor ModelPipelineStage::Forward(int chunk, int mb, const at::Tensor& input) {
  Transformer& model = chunks_[chunk];
  TORCH_CHECK(batch_ != nullptr, "pipeline stage: no batch set");
  const bool embeds = model->shard_options().has_embedding;
  const bool head = model->shard_options().has_head;
  at::Tensor x = input;
  const bool documents = document_mask_ || reset_positions_;
  data::Batch micro;
  if (embeds || head || documents) micro = data::ToTrainingBatch(*batch_, mb * micro_batch_, micro_batch_);
  SequenceDocuments layout;
  if (documents) {
    data::DocumentLayout found = data::DocumentLayoutOf(micro.inputs, eod_token_);
    if (document_mask_) layout.segments = std::move(found.segments);
    if (reset_positions_) layout.positions = std::move(found.positions);
  }
  // Context parallelism: this rank's two chunks of every row, with their targets and positions;
  // the segments stay whole (attention sees every key). The model finds the global positions
  // itself when the documents do not reset them.
  if (context_index_.defined() && micro.inputs.defined()) {
    micro.inputs = micro.inputs.index_select(1, context_index_);
    micro.targets = micro.targets.index_select(1, context_index_);
  }
  if (context_index_.defined() && layout.positions.defined()) {
    layout.positions = layout.positions.index_select(1, context_index_);
  }
  if (embeds) x = micro.inputs.to(device_, /*non_blocking=*/true);
  if (!head) return model->StageForward(x, layout);
  // The step's loss is the mean over micro-batches: each contributes 1/m of its mean.
  at::Tensor loss = model->StageLoss(x, micro.targets.to(device_, /*non_blocking=*/true), layout);
  return num_microbatches_ == 1 ? loss : loss / static_cast<double>(num_microbatches_);
}

std::vector<int64_t> ModelPipelineStage::ActivationShape(int chunk) const {
  return {micro_batch_, seq_len_ / context_parallel_ranks_ / sequence_parallel_ranks_, dim_};
}

std::vector<at::Tensor> ModelPipelineStage::ChunkParameters(int chunk) const {
  return chunks_[chunk]->parameters();
}

void ModelPipelineStage::BeforeLastWeightGradients(int chunk) {
  if (on_last_weight_gradients_) on_last_weight_gradients_(chunk);
}

}  // namespace tessera
