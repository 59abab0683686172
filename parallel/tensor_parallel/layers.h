// Column- and row-parallel linear layers (Megatron-LM), as functions over explicit weight shards:
// the model owns its parameters (and their ShardSpecs); these functions only place the
// communication around kernels::Linear, the bf16-aware matrix product.
//
// A column-parallel layer followed by a row-parallel one (attention's qkv -> wo, the MLP's
// gate|up -> down) needs one collective each way:
//
//                          forward                          backward
//   column, plain          none (CopyToTensorParallel)      all-reduce of grad x
//   column, seq-parallel   all-gather x along seq           all-gather x again (only the local
//                                                           block is kept between the passes),
//                                                           reduce-scatter of grad x along seq
//   row, plain             all-reduce of the output         none
//   row, seq-parallel      reduce-scatter of the output     all-gather of grad output along seq
//
// All ranks of the group must call these in the same order with the same shapes. With a group
// of one (nullptr) both are exactly kernels::Linear. Communication failures throw c10::Error.
#pragma once

#include <torch/types.h>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// y = x W^T with W split by output features: weight_shard is this rank's block [out/n, in].
// x: [batch, seq, in], replicated on every rank of the group; under sequence parallelism
// [batch, seq/n, in], this rank's sequence block, gathered first. Returns [batch, seq, out/n]
// (always the full sequence) in x's dtype; the weight's gradient is fp32. Several weight shards
// (q|k|v, gate|up) are one product, their outputs side by side in the order given.
torch::Tensor ColumnParallelLinear(const torch::Tensor& x, at::TensorList weight_shards, Communicator* group,
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
