// Fused RMSNorm forward and backward CUDA kernels, in plain CUDA C++ (raw pointers and a stream;
// no LibTorch), wrapped as an autograd function by kernels/rms_norm.cc.
//
//   forward:  inv_rms[i] = 1 / sqrt(mean_j x[i,j]^2 + eps)
//             y[i,j]     = x[i,j] * inv_rms[i] * w[j]
//   backward: grad_w[j]   = sum_i grad_y[i,j] * x[i,j] * inv_rms[i]
//             grad_x[i,j] = inv_rms[i] * grad_y[i,j] * w[j]
//                           - x[i,j] * inv_rms[i]^3 * (1/dim) * sum_k grad_y[i,k] * w[k] * x[i,k]
//
// Every sum and product is taken in fp32 whatever the storage type. x and y are fp32 or bf16
// (independently: the model feeds the fp32 residual stream and wants bf16 out for the next
// matrix product); w, inv_rms and grad_w are fp32; grad_x has x's type and grad_y y's type.
// Tensors are row-major and contiguous: [rows, dim] with the normalised dimension innermost.
// grad_w is reduced deterministically: each block of the first pass accumulates its rows'
// contribution in shared memory and writes one partial row to `workspace`; a second kernel
// sums the partial rows in a fixed order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels::cuda {

// The backward keeps one fp32 row of partial weight gradients per block in shared memory, so
// dim is bounded by the opt-in shared memory of a block (227 KB on Hopper, 163 KB on A100);
// callers fall back to another implementation above this.
inline constexpr int64_t kRmsNormMaxDim = 32768;

// Forward: writes y [rows, dim] and inv_rms [rows]. Returns the launch status (the kernel runs
// asynchronously on `stream`).
cudaError_t RmsNormForward(const void* x, DType x_dtype, const float* weight, void* y, DType y_dtype,
                           float* inv_rms, int64_t rows, int64_t dim, float eps, cudaStream_t stream);

// fp32 elements of workspace that RmsNormBackward needs for these sizes on the current device.
int64_t RmsNormBackwardWorkspaceElements(int64_t rows, int64_t dim);

// Backward: writes grad_x [rows, dim] (x_dtype) and grad_weight [dim] (fp32, overwritten, not
// accumulated) from grad_y, the forward's x and weight, and the inv_rms it saved. `workspace`
// holds at least RmsNormBackwardWorkspaceElements(rows, dim) floats.
cudaError_t RmsNormBackward(const void* grad_y, DType grad_y_dtype, const void* x, DType x_dtype,
                            const float* weight, const float* inv_rms, void* grad_x, float* grad_weight,
                            float* workspace, int64_t workspace_elements, int64_t rows, int64_t dim,
                            cudaStream_t stream);

// The backward's second pass on its own: out[c] = sum over p of partial[p, c] for `parts` rows of
// `dim` fp32 values, summed in a fixed order (deterministic). The fused add + RMSNorm backward
// (add_rms_norm_kernel.h) reduces its weight gradient with it.
cudaError_t SumPartialRows(const float* partial, int64_t parts, int64_t dim, float* out, cudaStream_t stream);

}  // namespace tessera::kernels::cuda
