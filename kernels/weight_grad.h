// Gradients of low-precision parameters, accumulated in fp32.
//
// Under train.precision bf16 the model's parameters are bf16 tensors, while their gradients live
// in fp32 (the data-parallel reducer's flat buffer; grad_reducer.h sets each parameter's .grad to
// an fp32 view of it). LibTorch's autograd casts every gradient a function returns to the dtype
// of the input it belongs to, so a bf16 parameter would get its gradient rounded to bf16 at every
// micro-step before the fp32 buffer sees it. The functions that consume parameters (Linear,
// Embedding, Fp32Weight) therefore hand their fp32 weight gradient to AccumulateWeightGrad,
// which adds it straight into the parameter's fp32 .grad and gives autograd nothing to cast
// (Megatron's gradient-accumulation fusion, done per parameter). The parameter's gradient
// accumulator node still runs, with an undefined gradient, so hooks on it (the reducer's) fire as
// before. fp32 parameters are untouched: their gradient goes back through autograd as always.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

// For a backward's fp32 gradient `grad` of parameter `weight`: returns `grad` itself when the
// weight is fp32 or fp64 (or wants no gradient); for a bf16 or fp16 weight it adds it into weight.grad()
// (allocating an fp32 gradient when there is none) and returns an undefined tensor, the autograd convention
// for "nothing to add". A non-fp32 weight must be a leaf.
torch::Tensor AccumulateWeightGrad(const torch::Tensor& weight, const torch::Tensor& grad);

// `weight` for a kernel that reads fp32 weights (RMSNorm): a bf16 or fp16 weight as an fp32 copy
// whose gradient goes to AccumulateWeightGrad; any other the tensor itself.
torch::Tensor Fp32Weight(const torch::Tensor& weight);

// torch::embedding(weight, indices); a bf16 or fp16 weight's rows come back in fp32 (the
// residual stream's dtype), and its gradient [rows, dim] is formed in fp32 and accumulated as
// above.
torch::Tensor Embedding(const torch::Tensor& weight, const torch::Tensor& indices);

}  // namespace tessera::kernels
