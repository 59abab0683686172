// Fused residual add + RMSNorm forward and backward CUDA kernels, in plain CUDA C++ (raw pointers
// and a stream; no LibTorch), wrapped as an autograd function by kernels/add_rms_norm.cc.
//
//   forward:  s[i,j]       = h[i,j] + delta[i,j]
//             inv_rms[i]   = 1 / sqrt(mean_j s[i,j]^2 + eps)
//             y[i,j]       = s[i,j] * inv_rms[i] * w[j]
//   backward: grad_w[j]    = sum_i grad_y[i,j] * s[i,j] * inv_rms[i]
//             grad_h[i,j]  = grad_s[i,j] + inv_rms[i] * grad_y[i,j] * w[j]
//                            - s[i,j] * inv_rms[i]^3 * (1/dim) * sum_k grad_y[i,k] * w[k] * s[i,k]
//             grad_delta   = grad_h, in delta's type
//
// Every sum and product is taken in fp32. h, s, grad_s and grad_h are fp32 (the model's residual
// stream); delta (the sublayer's output) and y (the next product's input) are fp32 or bf16,
// independently; w, inv_rms and grad_w are fp32. Tensors are row-major and contiguous, [rows, dim]
// with the normalised dimension innermost. grad_w is reduced as RmsNormBackward reduces it: one
// partial row per block in `workspace` (RmsNormBackwardWorkspaceElements(rows, dim) floats), then
// SumPartialRows in a fixed order.
//
// Registers per thread (nvcc 13.0, -O3 -Xptxas -v, sm_80 and sm_90, 2026-12-04): forward 21-40,
// backward 27-54 over the type and vector-width instances, no stack, no spills. The kernels are
// bounded to 512 threads a block (at most 128 registers a thread); the build passes -Xptxas
// -warn-spills (an error under TESSERA_WERROR), and scripts/device_check.sh prints every
// kernel's registers from the built library.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels::cuda {

// Forward: writes sum and y [rows, dim] and inv_rms [rows]; dim <= kRmsNormMaxDim. Returns the
// launch status (the kernel runs asynchronously on `stream`).
cudaError_t AddRmsNormForward(const float* h, const void* delta, DType delta_dtype, const float* weight,
                              float* sum, void* y, DType y_dtype, float* inv_rms, int64_t rows, int64_t dim,
                              float eps, cudaStream_t stream);

// Backward: writes grad_h [rows, dim] (fp32), grad_delta (delta_dtype; nullptr when the caller
// uses grad_h for it, as for an fp32 delta) and grad_weight [dim] (fp32, overwritten) from grad_y,
// grad_sum (the sum's own gradient from the residual path; nullptr for none), and the forward's
// sum, weight and inv_rms.
cudaError_t AddRmsNormBackward(const void* grad_y, DType grad_y_dtype, const float* grad_sum,
                               const float* sum, const float* weight, const float* inv_rms, float* grad_h,
                               void* grad_delta, DType delta_dtype, float* grad_weight, float* workspace,
                               int64_t workspace_elements, int64_t rows, int64_t dim, cudaStream_t stream);

}  // namespace tessera::kernels::cuda
