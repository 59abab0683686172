// The residual add fused with the RMSNorm that reads its result, as a transformer block has them
// (model/model.cc): sum = h + delta, with the sublayer output delta upcast to h's dtype (the fp32
// residual stream), and y = RMSNorm(sum) * weight in the compute dtype for the next product. One
// pass forward, one backward (CUDA kernel or CPU loop), where ATen takes an add, the norm, and in
// backward the addition of the residual path's gradient to the norm's.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

struct AddRmsNormOutput {
  torch::Tensor sum;     // h + delta, h's dtype: the residual stream after this sublayer
  torch::Tensor normed;  // RMSNorm(sum) * weight, in out_dtype
};

// Gradients: h's in h's dtype, delta's in delta's dtype, weight's in fp32 (summed over rows).
AddRmsNormOutput AddRmsNorm(const torch::Tensor& h, const torch::Tensor& delta, const torch::Tensor& weight,
                            double eps, torch::ScalarType out_dtype);

// The ATen composition the fused paths replace (h + delta, then RmsNormReference), in fp32, or
// in fp64 for fp64 inputs (gradient checks); normed is returned in the reduction's dtype.
AddRmsNormOutput AddRmsNormReference(const torch::Tensor& h, const torch::Tensor& delta,
                                     const torch::Tensor& weight, double eps);

}  // namespace tessera::kernels
