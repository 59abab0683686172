// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, reduced in fp32 whatever x's dtype, and
// returned in `out_dtype` (the compute precision that the next matrix product wants).
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                      torch::ScalarType out_dtype);

// Straightforward reference (several LibTorch ops, fp32), used by tests to check RmsNorm.
torch::Tensor RmsNormReference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace tessera::kernels
