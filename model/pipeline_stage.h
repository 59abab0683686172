// The model as the pipeline executor sees it (parallel/pipeline/executor.h): this rank's model
// chunks (one, or parallel.virtual_stages under the interleaved schedule), fed with this rank's
// micro-batches of the current global batch. The first model chunk reads its tokens here, the
// last returns the micro-batch's loss scaled by 1/micro-batches; everything in between passes
// the fp32 residual stream ([micro_batch, seq_len, dim]; seq_len / cp under context parallelism,
// where each rank holds two chunks of every row; and / tp under sequence parallelism). With packed documents
// (SetDocuments) every chunk, first or not, finds the micro-batch's documents in its tokens, which every rank
// reads.
#pragma once

#include <functional>
#include <vector>

#include "data/loader.h"
#include "model/model.h"
#include "parallel/pipeline/executor.h"

namespace tessera {

class ModelPipelineStage : public parallel::pipeline::PipelineStage {
 public:
  // `on_last_weight_gradients(chunk)` runs before the chunk's last gradient-accumulating
  // backward of a step (the data-parallel reducer's MarkFinalBackward).
  ModelPipelineStage(std::vector<Transformer> chunks, int64_t micro_batch, int64_t seq_len, int64_t dim,
                     int sequence_parallel_ranks, torch::Device device,
                     std::function<void(int)> on_last_weight_gradients);

  // The batch the next RunStep runs on, in micro-batches of micro_batch rows; each micro-batch's
  // loss is scaled by 1/num_microbatches (training's mean over the step; evaluation passes 1 to
  // get each micro-batch's own mean loss).
  void SetBatch(const data::LocalBatch* batch, int64_t num_microbatches);
  // data.document_mask and data.reset_position_ids: documents end with `eod_token`. Off when
  // neither is set (the default): every row is one causal sequence at positions 0..seq-1.
  void SetDocuments(int64_t eod_token, bool mask, bool reset_positions);

  at::Tensor Forward(int chunk, int mb, const at::Tensor& input) override;
  std::vector<int64_t> ActivationShape(int chunk) const override;
  at::ScalarType ActivationDtype() const override { return at::kFloat; }
  std::vector<at::Tensor> ChunkParameters(int chunk) const override;
  void BeforeLastWeightGradients(int chunk) override;

  std::vector<Transformer>& chunks() { return chunks_; }

 private:
  std::vector<Transformer> chunks_;
  int64_t micro_batch_, seq_len_, dim_;
  int sequence_parallel_ranks_;
  // Context parallelism: the ranks sharing each sequence, and this rank's tokens of a row
  // (global positions in local order; undefined without it).
  int context_parallel_ranks_ = 1;
  torch::Tensor context_index_;
  torch::Device device_;
  std::function<void(int)> on_last_weight_gradients_;
  const data::LocalBatch* batch_ = nullptr;
  int64_t num_microbatches_ = 1;
  int64_t eod_token_ = -1;
  bool document_mask_ = false, reset_positions_ = false;
};

}  // namespace tessera
