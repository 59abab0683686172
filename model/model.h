// The Llama 3 architecture as a LibTorch module: token embedding, pre-norm blocks (RMSNorm,
// grouped-query attention with rotary embeddings and a causal mask, SwiGLU MLP), final RMSNorm
// and an output head that may share the embedding. Weights are created fp32 (under bf16 precision
// the data-parallel reducer later makes them bf16, keeping an fp32 master for the optimizer:
// parallel/data_parallel/grad_reducer.h); the forward pass computes in `compute_dtype` (fp32 or
// bf16) and takes the gradients of bf16 weights in fp32 (kernels/weight_grad.h).
//
// Tensor parallelism (Megatron style, parallel/tensor_parallel): given a TP communicator each
// rank holds a shard of every matrix (query heads, key/value heads, MLP columns, vocabulary
// rows) under the parameter's logical name, and ParameterInfos() says which slice of the
// logical tensor it is. Optional sequence parallelism splits the residual stream along the
// sequence. A model may also be one pipeline chunk: a range of layers (named by their global
// index), with or without the embedding and the head. Without a TP communicator the whole model
// behaves, and computes, exactly as a single-process model. docs/architecture.md has the design;
// model/sharding.h has how the model is split (ModelShardOptions, ParameterLayout, ParameterInfo).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"
#include "kernels/document_attention.h"
#include "kernels/rotary.h"
#include "model/sharding.h"
#include "parallel/comm/communicator.h"
#include "parallel/context_parallel/context_attention.h"
#include "parallel/data_parallel/unit_gatherer.h"

namespace tessera {

// The tensor-parallel group as the blocks see it.
struct TensorParallelContext {
  parallel::Communicator* group = nullptr;  // nullptr when size == 1
  int size = 1;
  int rank = 0;
  bool sequence_parallel = false;
};

// The documents packed in a micro-batch's rows (data.document_mask, data.reset_position_ids;
// data/document_layout.h builds them from the tokens). An undefined tensor means what the model
// does without them: causal attention over the whole row, rotary positions 0..seq-1. Both are
// over the whole sequence, also under sequence parallelism (attention sees the gathered
// sequence) and on pipeline chunks without the embedding. Under context parallelism positions
// are this rank's tokens' (local order, [batch, seq / cp]) and segments the whole row's.
struct SequenceDocuments {
  torch::Tensor segments;   // [batch, seq] int64, CPU: each token's document; attention stays inside it
  torch::Tensor positions;  // [batch, seq] int64: each token's rotary position
};

// What every layer's attention reads for one micro-batch, built once per forward from the
// SequenceDocuments. Copied by value into recomputation closures, so that a replay in backward
// sees its own micro-batch even when a pipeline schedule ran other forwards in between.
struct AttentionInputs {
  // Implicit: attention over one causal sequence needs only the tables.
  AttentionInputs(kernels::RotaryTables tables = {}) : rotary(std::move(tables)) {}  // NOLINT

  kernels::RotaryTables rotary;  // the model's tables by position, or one row per token
  bool per_token_rotary = false;
  std::shared_ptr<const kernels::DocumentAttentionPlan> documents;  // null: causal over the row
  // Under context parallelism (then `documents` is null: the plan's masks hold the documents).
  std::shared_ptr<const parallel::ContextAttentionPlan> context;
};

// The RMSNorm in front of a block's sublayer, handed to the sublayer to fold into its first
// product instead of applied before it: under model.recompute: selective, so that the norm's
// output is formed again in backward rather than kept
// (parallel/tensor_parallel/norm_column_linear.h).
struct PreNorm {
  const torch::Tensor& weight;
  double eps;
  torch::ScalarType dtype;  // the normalised activations' (the compute dtype)
};

class AttentionImpl : public torch::nn::Module {
 public:
  // Query heads split over the group; key/value heads split when n_kv_heads % size == 0, else
  // this rank holds the one kv head its query heads use.
  explicit AttentionImpl(const ModelConfig& config, const TensorParallelContext& tp = {});
  // x: [batch, seq, dim] in the compute dtype ([batch, seq/tp, dim] under sequence parallelism).
  // Returns the same shape. With `norm`, x is the fp32 residual stream and the norm is applied
  // inside the q|k|v product.
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& inputs, const PreNorm* norm = nullptr);

  torch::Tensor wq, wk, wv, wo;  // [out_features, in_features], this rank's blocks

 private:
  // The attention core: the fused q|k|v product [batch, seq, (h + 2 kv) hd / tp] -> rotary,
  // causal (or document-masked) attention -> [batch, seq, h hd / tp], the input of the output
  // projection.
  torch::Tensor Core(const torch::Tensor& fused, const AttentionInputs& inputs) const;

  TensorParallelContext tp_;
  int64_t n_heads_, n_kv_heads_, head_dim_;  // heads on this rank
  bool selective_;  // model.recompute: selective: the attention core runs again in backward
};
TORCH_MODULE(Attention);

class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const ModelConfig& config, const TensorParallelContext& tp = {});
  // As Attention's: with `norm`, x is the residual stream and the norm runs inside gate|up.
  torch::Tensor forward(const torch::Tensor& x, const PreNorm* norm = nullptr);

  torch::Tensor w_gate, w_up, w_down;  // gate/up split by rows (column-parallel), down by columns

 private:
  TensorParallelContext tp_;
  bool selective_;  // model.recompute: selective: the SwiGLU values are formed again in backward
};
TORCH_MODULE(FeedForward);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const ModelConfig& config, const TensorParallelContext& tp = {});
  // h: the residual stream [batch, seq, dim] ([batch, seq/tp, dim] under sequence
  // parallelism), fp32.
  torch::Tensor forward(const torch::Tensor& h, const AttentionInputs& inputs,
                        torch::ScalarType compute_dtype);

  torch::Tensor attention_norm, ffn_norm;  // replicated
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};

 private:
  double norm_eps_;
  bool fold_norms_;  // model.recompute: selective: the norms run inside the following products
};
TORCH_MODULE(Block);

class TransformerImpl : public torch::nn::Module {
 public:
  // Builds the modules of this rank's chunk and shard; weights are set by InitializeWeights
  // (call it once, after .to(device)). With a TP communicator of several ranks this is
  // collective over it when kv heads are replicated (a sub-communicator is split off). Throws
  // c10::Error with ValidateShardOptions' message when the options do not fit the config.
  TransformerImpl(const ModelConfig& config, int64_t max_seq_len, const ModelShardOptions& options = {});

  // The whole forward pass of a chunk with the head: input as for StageForward -> logits
  // [batch, seq, vocab] in fp32, gathered over the TP group (tests; training uses Loss).
  torch::Tensor forward(const torch::Tensor& input, const SequenceDocuments& documents = {});
  // Mean cross-entropy of predicting `targets` [batch, seq] (the same on every TP rank); softmax
  // and mean in fp32, vocab-parallel when TP > 1. Same as StageLoss.
  torch::Tensor Loss(const torch::Tensor& input, const torch::Tensor& targets,
                     const SequenceDocuments& documents = {});

  // This chunk's part of the forward pass up to (not including) the final norm: input is int64
  // tokens [batch, seq] when the chunk has the embedding, else the fp32 residual stream from the
  // previous chunk, [batch, seq, dim] ([batch, seq/tp, dim] under sequence parallelism, this
  // rank's sequence block). Returns the residual stream after the chunk's layers, in the same
  // layout (what a pipeline stage sends on). `documents`: the micro-batch's packed documents, as
  // every chunk of the pipeline takes them (whole rows).
  torch::Tensor StageForward(const torch::Tensor& input, const SequenceDocuments& documents = {});
  // For a chunk with the head: StageForward, the final norm, the head and the mean cross-entropy
  // over all batch x seq target tokens (plus the z-loss in training, SetZLoss).
  torch::Tensor StageLoss(const torch::Tensor& input, const torch::Tensor& targets,
                          const SequenceDocuments& documents = {});

  // The parameters this rank holds, in named_parameters() order, with their layout.
  std::vector<ParameterInfo> ParameterInfos() const;

  // Completes the gradients that tensor parallelism leaves partial; call after backward and
  // before any data-parallel reduction, gradient norm or optimizer step. It touches only:
  //  - under sequence parallelism (TP > 1): every RMSNorm weight this chunk holds
  //    (layers.N.attention_norm, layers.N.ffn_norm, norm): each rank saw only its sequence
  //    block, so the gradients are summed over the TP group;
  //  - when n_kv_heads < tp (ShardSpec.replicas > 1): layers.N.attention.wk and .wv, summed over
  //    the ranks holding the same kv heads (each used them for its own query heads only).
  // Gradients are summed in place (FlatAdamW's views stay valid); undefined ones count as zero.
  // Every other gradient is already complete. All ranks of the TP group must call it, in the
  // same order as their other collectives. A no-op without TP.
  absl::Status SyncTensorParallelGrads();

  void SetComputeDtype(torch::ScalarType dtype) { compute_dtype_ = dtype; }
  // How attention with SequenceDocuments::segments runs (kernels/document_attention.h); kAuto
  // picks by device. Tests choose a path to compare the two.
  void SetDocumentAttentionPath(kernels::DocumentAttentionPath path) { document_path_ = path; }
  // train.z_loss: StageLoss adds z_loss x mean log(Z)^2 while the graph is recorded (training);
  // without it (evaluation) the loss is the cross-entropy alone.
  void SetZLoss(double z_loss) { z_loss_ = z_loss; }
  // Under parallel.zero 3: the parameters are whole only between gatherer->Gather(unit) and
  // Release(unit) (units: sharding.h's ParameterUnit). The forward then gathers each unit before
  // computing with it (prefetching the next gatherer->prefetch() units) and releases it after;
  // in training an identity node on each unit's output gathers the unit again before its
  // backward (prefetching the previous units) and, at the end of the backward pass, releases
  // whatever is still gathered. The embedding's backward reads only the token indices, so it is
  // not gathered for backward (a tied head gathers it with the head). Under zero 1 and 2 the
  // same Gather(unit) before each unit waits for the unit's share of the all-gather of updated
  // weights still on its way from the last step (no backward gathers: releases_units() is
  // false). nullptr: no gathering.
  void SetUnitGatherer(parallel::UnitGatherer* gatherer) { gatherer_ = gatherer; }
  // Whether every parameter of this chunk is whole and current now (no gatherer, or nothing on
  // its way and nothing released): what a reader outside the forward (generation) requires.
  bool ParametersWhole() const { return gatherer_ == nullptr || gatherer_->AllGathered(); }
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  const ModelConfig& config() const { return config_; }
  const ModelShardOptions& shard_options() const { return options_; }
  int tp_size() const { return tp_.size; }
  int tp_rank() const { return tp_.rank; }
  bool sequence_parallel() const { return tp_.sequence_parallel; }
  int64_t first_layer() const { return first_layer_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers.size()); }

  // Deterministic initialisation (docs/architecture.md): each logical parameter is drawn whole
  // on the CPU from a generator seeded by (seed, logical name) and this rank keeps its block, so
  // the weights depend neither on the device, the construction order nor the parallel layout.
  // A tied copy of the embedding is drawn as "tok_embeddings". Padding rows are zero.
  void InitializeWeights(uint64_t seed);

  torch::Tensor tok_embeddings;  // [vocab_padded / tp, dim]; undefined without the embedding
  torch::Tensor norm;            // [dim]; undefined without the head
  // [vocab_padded / tp, dim]: the untied head, or a tied copy of the embedding on a chunk that
  // has the head but not the embedding; undefined otherwise.
  torch::Tensor output;
  std::vector<Block> layers;  // this chunk's layers: layers[i] is global layer first_layer() + i

 private:
  // The final norm of StageForward's output: [batch, seq (or seq/tp), dim] in the compute dtype.
  torch::Tensor FinalNorm(const torch::Tensor& h);
  // Zero 3: the units each step of this chunk's forward uses (the embedding, each layer, the
  // head with the embedding when it is tied), and the gathering around step `step`.
  std::vector<std::vector<int>> ForwardSteps() const;
  void BeginStep(size_t step);
  void EndStep(size_t step);
  // `output` of step `step`, through an identity node that gathers the step's units before
  // their backward (in training with a gatherer; otherwise `output` itself).
  torch::Tensor GateBackward(const torch::Tensor& output, size_t step);
  // Block `index` of this chunk on the residual stream h; recomputed in backward when
  // model.recompute says so (model/recompute.h).
  torch::Tensor ForwardBlock(size_t index, const torch::Tensor& h, const AttentionInputs& inputs);
  // The attention inputs of a micro-batch of `batch` rows of `seq` tokens.
  AttentionInputs MakeAttentionInputs(const SequenceDocuments& documents, int64_t batch, int64_t seq) const;
  // The same under context parallelism: `local` = this rank's tokens of each row.
  AttentionInputs MakeContextAttentionInputs(const SequenceDocuments& documents, int64_t batch,
                                             int64_t local) const;
  // This rank's logits columns [batch, seq, vocab_padded / tp] (the full vocabulary at TP 1).
  torch::Tensor LocalLogits(const torch::Tensor& input, const SequenceDocuments& documents);
  torch::Tensor HeadWeight() const { return output.defined() ? output : tok_embeddings; }
  int64_t VocabBegin() const;

  ModelConfig config_;
  ModelShardOptions options_;
  TensorParallelContext tp_;
  int64_t first_layer_ = 0;
  kernels::RotaryTables rotary_;
  torch::ScalarType compute_dtype_ = torch::kFloat;
  kernels::DocumentAttentionPath document_path_ = kernels::DocumentAttentionPath::kAuto;
  double z_loss_ = 0.0;
  // The ranks of the TP group holding the same kv heads (only when kv heads are replicated).
  std::unique_ptr<parallel::Communicator> kv_replica_group_;
  parallel::UnitGatherer* gatherer_ = nullptr;
  std::vector<std::vector<int>> steps_;  // ForwardSteps(), computed once
};
TORCH_MODULE(Transformer);

// model.rope_scaling and its parameters, as the rotary tables take them.
kernels::RotaryScaling RotaryScalingOf(const ModelConfig& config);

// Parameter counts of the closed formula, used by tests and MFU.
int64_t ParameterCount(const ModelConfig& config);
// Parameters that take part in matrix products per token (everything but the input embedding
// lookup and the norms; the head counts even when tied).
int64_t MatmulParameterCount(const ModelConfig& config);

}  // namespace tessera
