// RMSNorm followed by a column-parallel linear layer, with the norm's output formed again in
// backward instead of saved: model.recompute: selective's treatment of the norm outputs
// (Korthikanti et al. 2022 count them among the activations worth recomputing: one elementwise
// pass over the residual stream, which the norm's own backward keeps anyway).
//
// Without it the product saves its input, the normalised activations (tokens x dim in the
// compute dtype, this rank's sequence block under sequence parallelism), for every layer and
// micro-batch in flight, twice per block (before attention and before the MLP). With it only the
// norm's input (the fp32 residual stream, which the norm's backward needs regardless) is kept;
// backward normalises it again, gathers it again under sequence parallelism as the plain
// sequence-parallel layer does, and then runs the product's and the norm's backward with the same
// arithmetic as the unfused pair: values and gradients are bit-for-bit those of
// ColumnParallelLinear(RmsNorm(h)).
//
// The norm's weight and the product's weights are inputs of the node, so a zero-bubble
// schedule's input pass (the gradient of h alone) and weight pass (the parameters alone) each get
// theirs; the gradient of the normalised activations, which both need, is formed in each (as
// the weight pass forms the input gradients of every later layer again). The product's backward
// is the column layer's (ColumnParallelLinearBackward): its input gradient's collective is in
// flight while its weight gradients are formed, and is waited for before the norm's backward.
#pragma once

#include <torch/types.h>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// ColumnParallelLinear(kernels::RmsNorm(h, Fp32Weight(norm_weight), eps, norm_dtype), weights, group,
// sequence_parallel), without the normalised activations kept for backward.
torch::Tensor NormColumnParallelLinear(const torch::Tensor& h, const torch::Tensor& norm_weight, double eps,
                                       torch::ScalarType norm_dtype, at::TensorList weights,
                                       Communicator* group, bool sequence_parallel);

}  // namespace tessera::parallel
