// The matrix product of the model: y = x W^T with x in the compute dtype and W an fp32 master
// weight. On CPUs without native bf16 matrix units (no AVX512-BF16 or AMX), LibTorch's bf16
// GEMM falls back to a path 5-40x slower than fp32; there Tessera rounds the operands to bf16
// and multiplies them with the fp32 GEMM, which is the arithmetic of a bf16 tensor core (bf16
// inputs, fp32 accumulation) at fp32 speed.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

// x: [..., in] (fp32 or bf16), weight: [out, in] fp32. Returns [..., out] in x's dtype; the
// weight's gradient is fp32.
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight);

// Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 on x86-64).
bool CpuHasNativeBf16Matmul();

}  // namespace tessera::kernels
