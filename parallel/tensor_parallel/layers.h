// Column- and row-parallel linear layers (Megatron-LM), as functions over explicit weight shards:
// the model owns its parameters (and their ShardSpecs); these functions only place the
// communication around kernels::Linear, the bf16-aware matrix product.
//
// A column-parallel layer followed by a row-parallel one (attention's qkv -> wo, the MLP's
// gate|up -> down) needs one collective each way:
//
//                          forward                          backward
//   column, plain          none (CopyToTensorParallel)      all-reduce of grad x
//   column, seq-parallel   all-gather x along seq           all-gather x again for grad W (only
//                                                           the local block is kept between the
//                                                           passes), reduce-scatter of grad x
//   row, plain             all-reduce of the output         none
//   row, seq-parallel      reduce-scatter of the output     all-gather of grad output along seq
//
// The column layer's backward overlaps its input gradient's collective with its weight gradient
// (Megatron-LM's async_grad_allreduce, and its reduce-scatter under sequence parallelism):
//
//   1. under sequence parallelism, when a weight gradient is wanted: all-gather x (blocking)
//   2. grad x = grad y W (the input-gradient GEMM)
//   3. start the all-reduce (or reduce-scatter) of grad x, without waiting
//   4. grad W = grad y^T x (the weight-gradient GEMM), while the collective is in flight
//   5. wait for the collective, then return both
//
// Each operation and its operands are those of the layer without the overlap (kernels::Linear
// composed with CopyToTensorParallel or GatherFromSequence); only the collective and the
// independent weight-gradient GEMM trade places and the wait moves, so values and gradients are
// bit-for-bit the same. On NCCL the collective runs on the communicator's stream concurrently
// with the GEMM on the compute stream, and the wait makes the compute stream (not the host) wait
// for it. On MPI the same code runs, but a nonblocking collective may progress only inside MPI
// calls: most of its transfer then happens inside the wait, after the GEMM, and what the overlap
// gains depends on the MPI library's asynchronous progress. A zero-bubble schedule's input pass
// wants no weight gradient: steps 1 and 4 are skipped and the wait follows the start at once; its
// weight pass, which forms the input gradients again, overlaps as above.
//
// All ranks of the group must call these in the same order with the same shapes. With a group
// of one (nullptr) both are exactly kernels::Linear. Communication failures throw c10::Error.
#pragma once

#include <torch/types.h>

#include <vector>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// y = x W^T with W split by output features: weight_shard is this rank's block [out/n, in].
// x: [batch, seq, in], replicated on every rank of the group; under sequence parallelism
// [batch, seq/n, in], this rank's sequence block, gathered first. Returns [batch, seq, out/n]
// (always the full sequence) in x's dtype; the weight's gradient is fp32. Several weight shards
// (q|k|v, gate|up) are one product, their outputs side by side in the order given.
torch::Tensor ColumnParallelLinear(const torch::Tensor& x, at::TensorList weight_shards, Communicator* group,
                                   bool sequence_parallel);

// The column layer's backward (steps 1-5 above), outside autograd, for functions that run their
// own (the norm-folded layer, norm_column_linear.h). x is the product's input as this rank holds
// it (its sequence block under sequence parallelism); grad_y the product's output gradient. The
// input gradient, where wanted, is summed over the group (reduce-scattered along seq under
// sequence parallelism), in x's dtype; the weight gradients are kernels::LinearWeightGrads's (a
// bf16 weight's goes into its fp32 .grad).
struct ColumnLinearGrads {
  torch::Tensor input;                 // undefined unless wanted
  std::vector<torch::Tensor> weights;  // one per weight; undefined where not wanted or accumulated
};
ColumnLinearGrads ColumnParallelLinearBackward(const torch::Tensor& grad_y, const torch::Tensor& x,
                                               at::TensorList weights, bool want_input,
                                               const std::vector<bool>& want_weights, Communicator* group,
                                               bool sequence_parallel);

// y = x W^T with W split by input features: weight_shard is this rank's block [out, in/n] and x
// its block of the input features [batch, seq, in/n] (a column-parallel layer's output). The
// partial products are summed over the group: returns [batch, seq, out] on every rank, or under
// sequence parallelism this rank's sequence block [batch, seq/n, out] of the sum.
torch::Tensor RowParallelLinear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                Communicator* group, bool sequence_parallel);

// RowParallelLinear(kernels::Swiglu(gate_up), weight_shard, ...) with the SwiGLU values formed
// again in backward instead of saved (kernels/swiglu_linear.h; model.recompute: selective).
torch::Tensor RowParallelSwigluLinear(const torch::Tensor& gate_up, const torch::Tensor& weight_shard,
                                      Communicator* group, bool sequence_parallel);

}  // namespace tessera::parallel
