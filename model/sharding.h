// The model's sharding plan: how the Llama model is split over the process grid, decided here
// once so that the trainer, checkpoints, gradient norms and resharding read it from one place.
//   - pipeline: which layers each model chunk holds (balanced by the chunks' FLOPs, or
//     parallel.pp_layers), and so which chunks a pipeline rank builds (ModelShardOptions);
//   - tensor parallelism: the layout of every parameter over the TP group (ParameterLayout:
//     which dimension is split, into how many blocks, which ranks hold the same block);
//   - training: what each parameter this rank holds is to the optimizer and the gradient
//     reduction (ParameterRole: whether it decays, its share of the gradient norm, whether its
//     gradient needs completing across another group first, whether it is one copy of the tied
//     embedding).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"
#include "parallel/comm/communicator.h"
#include "parallel/pipeline/partition.h"
#include "parallel/tensor_parallel/shard_spec.h"

namespace tessera {

// What part of the model this rank builds and how it is split.
struct ModelShardOptions {
  // The tensor-parallel group (not owned; must outlive the model and every graph built on it).
  // nullptr or a group of one: no tensor parallelism.
  parallel::Communicator* tp = nullptr;
  // Split the residual stream along the sequence over the TP group (norms, residual adds and
  // the embedding output on [batch, seq/tp, dim]); needs seq_len % tp == 0.
  bool sequence_parallel = false;
  // The pipeline chunk: layers [first_layer, first_layer + num_layers) of the config's n_layers;
  // num_layers = -1: all remaining layers.
  int64_t first_layer = 0;
  int64_t num_layers = -1;
  bool has_embedding = true;  // the chunk starts with tok_embeddings (its input is tokens)
  bool has_head = true;       // the chunk ends with the final norm, the head and the loss
  // The context-parallel group (not owned), nullptr or a group of one: none. Each rank then holds
  // two chunks of every sequence (parallel/context_parallel/chunks.h): the model's input is this
  // rank's 2 x seq / (2 cp) tokens in that order, rotary positions are the tokens' global ones,
  // and attention gathers keys and values over the group.
  parallel::Communicator* cp = nullptr;
};

// Checks the options against the config: the layer range, n_heads % tp == 0, n_kv_heads % tp
// == 0 or tp % n_kv_heads == 0, ffn_dim % tp == 0, and under sequence parallelism max_seq_len %
// tp == 0; the message names the numbers. The model's constructor throws this message
// (c10::Error); callers that want a Status call this first.
absl::Status ValidateShardOptions(const ModelConfig& config, int64_t max_seq_len,
                                  const ModelShardOptions& options);

// The pipeline's stage costs in FLOPs per token (forward + backward): a layer's matrix products
// and attention, the head's product; the embedding lookup is free.
parallel::pipeline::StageCosts PipelineStageCosts(const ModelConfig& config, int64_t seq_len);

// The layers of each model chunk over `pp` ranks of `v` chunks: `pp_layers` (parallel.pp_layers)
// when given, else balanced by PipelineStageCosts. Errors name parallel.pp_layers, or
// model.recompute_layers when it exceeds the largest chunk's layer count.
absl::StatusOr<parallel::pipeline::Partition> PlanPartition(const ModelConfig& config, int64_t seq_len,
                                                            int64_t pp, int64_t v,
                                                            const std::vector<int64_t>& pp_layers);

// The model chunks pipeline rank `pp_rank` builds under `partition` (local chunk order), each
// split over `tp` (nullptr: none).
std::vector<ModelShardOptions> ChunkShardOptions(const parallel::pipeline::Partition& partition,
                                                 int64_t pp_rank, parallel::Communicator* tp,
                                                 bool sequence_parallel);

// How one parameter, named by its logical name, is laid out over a TP group of `tp_size`:
// the ShardSpec of rank `tp_rank` and the logical (unpadded, unsharded) shape.
struct ParameterLayout {
  parallel::ShardSpec shard;
  std::vector<int64_t> global_shape;
};
// `name` is a logical name (or its last component: "wq", "norm", ...); others are an error.
absl::StatusOr<ParameterLayout> LayoutOfParameter(const ModelConfig& config, const std::string& name,
                                                  int tp_size, int tp_rank);
// The shape this rank holds: global_shape with the split dimension replaced by the (padded)
// block size.
std::vector<int64_t> LocalShape(const ParameterLayout& layout);

// One parameter this rank holds.
struct ParameterInfo {
  std::string name;                   // logical name: "layers.7.attention.wq", "output", ...
  torch::Tensor tensor;               // this rank's shard (the registered parameter)
  parallel::ShardSpec shard;          // which block of the logical tensor it is
  std::vector<int64_t> global_shape;  // the logical shape (vocab rows unpadded)
  // Non-empty for the head of a chunk that has the head but not the embedding when embeddings
  // are tied: "output" is then a copy of "tok_embeddings" (initialised identically, never saved
  // on its own); the two copies' gradients must be summed over the embedding group.
  std::string tied_copy_of;
  bool is_tied_copy() const { return !tied_copy_of.empty(); }
  // The logical tensor it holds a block of: tied_copy_of for a tied copy, else name.
  const std::string& logical_name() const { return is_tied_copy() ? tied_copy_of : name; }
};

// The parameters of the model chunk `options` describes on TP rank `tp_rank` of `tp_size`,
// without tensors (`tensor` undefined), in the order the chunk's module lists them
// (TransformerImpl::ParameterInfos returns these, with the tensors): the chunk's own
// tok_embeddings, norm and output, then each layer's attention_norm, ffn_norm, attention.wq, wk,
// wv, wo, feed_forward.w_gate, w_up, w_down. The planner sizes the flat buffers from it.
std::vector<ParameterInfo> ChunkParameterLayouts(const ModelConfig& config, const ModelShardOptions& options,
                                                 int tp_size, int tp_rank);

// The grid as the plan sees it.
struct ShardingContext {
  int64_t tp = 1;
  int64_t pp = 1;
  bool sequence_parallel = false;           // and tp > 1
  bool decay_norms_and_embeddings = false;  // train.decay_norms_and_embeddings
};

// What one parameter is to training.
struct ParameterRole {
  // AdamW's weight decay applies: matrices of linear layers (and, with
  // decay_norms_and_embeddings, everything).
  bool decay = true;
  // Each logical element counts once in the global gradient norm: a tensor replicated over the
  // TP group is held by tp ranks, a replicated key/value block by `replicas` ranks, a tied copy
  // is the embedding again (0).
  double norm_weight = 1.0;
  // The gradient needs a fix-up across another group before the data-parallel reduction: what
  // TransformerImpl::SyncTensorParallelGrads completes (sequence-parallel norms, replicated kv
  // blocks), and the tied embedding's two copies.
  bool late = false;
  // One of the tied embedding's two copies on the first and last pipeline stage (pp > 1): both
  // take the sum of their gradients over the embedding group.
  bool tied_across_stages = false;
};
ParameterRole RoleOf(const ParameterInfo& info, const ModelConfig& config, const ShardingContext& context);

// The ZeRO-3 unit of a parameter, numbered in forward order: 0 for the embedding, 1 + N for
// global layer N's parameters, n_layers + 1 for the final norm and the head (an untied head or a
// tied copy). Units are what parallel.zero 3 gathers and frees as one.
int ParameterUnit(const std::string& name, int64_t n_layers);

// Every parameter this rank holds, in order of use in the forward pass (chunk by chunk), with
// its chunk, role and ZeRO-3 unit, and whether one matrix product reads it together with the
// next (wq with wk, wk with wv, w_gate with w_up of the same layer): the flat buffers then lay
// them out as one matrix (parallel/data_parallel/bucket_layout.h).
struct PlannedParameter {
  ParameterInfo info;
  int chunk = 0;
  ParameterRole role;
  int unit = 0;
  bool fuse_with_next = false;
};
std::vector<PlannedParameter> PlanParameters(const std::vector<std::vector<ParameterInfo>>& chunk_infos,
                                             const ModelConfig& config, const ShardingContext& context);

}  // namespace tessera
