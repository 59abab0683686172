// RMSNorm wrapper: uses ATen's fused rms_norm (one pass forward and backward on CPU and CUDA)
// on fp32 input; the residual stream is kept in fp32, so the reduction is fp32 by construction.
#include "kernels/rms_norm.h"

#include <ATen/ATen.h>

namespace tessera::kernels {

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                      torch::ScalarType out_dtype) {
  // Half-precision inputs are reduced in fp32; fp32 and fp64 (gradient checks) stay as they are.
  const bool low = x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf;
  torch::Tensor x32 = low ? x.to(torch::kFloat) : x;
  torch::Tensor w32 = weight.scalar_type() == x32.scalar_type() ? weight : weight.to(x32.scalar_type());
  torch::Tensor y = at::rms_norm(x32, {x32.size(-1)}, w32, eps);
  return y.scalar_type() == out_dtype ? y : y.to(out_dtype);
}

torch::Tensor RmsNormReference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor x32 = x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat);
  torch::Tensor inv_rms = torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return x32 * inv_rms * weight.to(x32.scalar_type());
}

}  // namespace tessera::kernels
