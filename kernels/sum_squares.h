// The sum of squares of a tensor's elements as an fp64 scalar on the tensor's device: the
// building block of the gradient norm.
#pragma once

#include <ATen/core/Tensor.h>

namespace tessera::kernels {

// 0-dim fp64 tensor on x's device. fp32 on a CPU: one fused pass (kernels/cpu_loops.h
// SumSquaresF64) over fixed blocks of 64Ki elements whose partial sums are added in order, so
// the result does not depend on the thread count. fp32 elsewhere (CUDA): one fp32 reduction pass
// (the L2 norm, accumulated in fp32 by the device's tree reduction), squared in fp64; no fp64
// copy of the gradients. Other dtypes: x.to(fp64).square().sum().
at::Tensor SumOfSquares(const at::Tensor& x);

}  // namespace tessera::kernels
