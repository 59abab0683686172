// Fused residual add + RMSNorm forward and backward (see add_rms_norm_kernel.h for the formulas
// and layouts), built like the RMSNorm kernels (rms_norm_kernel.cu) from the row loops they share
// (row_norm.cuh).
//
// Forward: one block per row (grid-stride over rows). Pass 1 reads h and delta, writes their sum
// and sums its squares (fp32; warp shuffles, then one shared-memory step across warps); pass 2
// reads the sum back and writes y. A thread reads back only the columns it wrote itself, so no
// synchronisation is needed, and the row (at most 128 KB) is still in L1/L2. Threads move 8
// consecutive elements per access (16 bytes of bf16, 2 x 16 bytes of fp32) when dim is a multiple
// of 8 and every pointer is 16-byte aligned; otherwise one element at a time.
//
// Backward: a fixed number of blocks (4 per multiprocessor, at most one per row) striding over
// rows, as RmsNormBackward: per row the block reduction dot = sum_k grad_y*w*s, then grad_h (plus
// the residual path's grad_s) and, for a bf16 delta, its bf16 copy in the same pass; each thread
// adds grad_y*s*inv_rms of its own columns to the block's fp32 partial weight gradient in shared
// memory, and SumPartialRows (rms_norm_kernel.cu) adds the blocks' partial rows in a fixed order.
#include "kernels/cuda/add_rms_norm_kernel.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/rms_norm_kernel.h"
#include "kernels/cuda/row_norm.cuh"

namespace tessera::kernels::cuda {
namespace {

template <typename Td, typename Ty, int kVec>
__global__ void __launch_bounds__(kRowNormMaxThreads)
    AddRmsNormForwardKernel(const float* __restrict__ h, const Td* __restrict__ delta,
                            const float* __restrict__ w, float* __restrict__ sum, Ty* __restrict__ y,
                            float* __restrict__ inv_rms, int64_t rows, int64_t dim, float eps) {
  __shared__ float red[kRedSlots];
  const OwnColumns<kVec> own(dim);
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* hr = h + row * dim;
    const Td* dr = delta + row * dim;
    float* sr = sum + row * dim;
    const float r = RowInvRms<kVec>(own, inv_dim, eps, red, [&](int c) {
      const Pack<float, kVec> hp = Load<float, kVec>(hr + c);
      const Pack<Td, kVec> dp = Load<Td, kVec>(dr + c);
      Pack<float, kVec> sp;
#pragma unroll
      for (int k = 0; k < kVec; ++k) sp.v[k] = hp.v[k] + ToFloat(dp.v[k]);
      Store<float, kVec>(sr + c, sp);
      return sp;
    });
    if (threadIdx.x == 0) inv_rms[row] = r;
    NormaliseRow<kVec>(sr, w, r, y + row * dim, own);  // each thread reads back its own writes
  }
}

// Dynamic shared memory: kRedSlots floats, then dim floats of partial weight gradient. grad_s
// and grad_delta may be null (uniform branches).
template <typename Tg, typename Td, int kVec>
__global__ void __launch_bounds__(kRowNormMaxThreads)
    AddRmsNormBackwardKernel(const Tg* __restrict__ gy, const float* __restrict__ grad_s,
                             const float* __restrict__ s, const float* __restrict__ w,
                             const float* __restrict__ inv_rms, float* __restrict__ grad_h,
                             Td* __restrict__ grad_delta, float* __restrict__ partial, int64_t rows,
                             int64_t dim) {
  extern __shared__ float4 smem_raw[];  // float4: 16-byte alignment for the vector accesses
  float* red = reinterpret_cast<float*>(smem_raw);
  float* acc = red + kRedSlots;
  const OwnColumns<kVec> own(dim);
  const float inv_dim = 1.0f / static_cast<float>(dim);
  ZeroRow<kVec>(acc, own);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * dim;
    const float r = inv_rms[row];
    const float dot = RowGradDot<kVec>(gy + base, s + base, w, own, red);
    const float coef = r * r * r * dot * inv_dim;
    RowInputGrad<kVec>(gy + base, s + base, w, r, coef, acc, own, [&](int c, Pack<float, kVec> out) {
      if (grad_s != nullptr) {
        const Pack<float, kVec> rp = Load<float, kVec>(grad_s + base + c);
#pragma unroll
        for (int k = 0; k < kVec; ++k) out.v[k] += rp.v[k];
      }
      Store<float, kVec>(grad_h + base + c, out);
      if (grad_delta != nullptr) {
        Pack<Td, kVec> low;
#pragma unroll
        for (int k = 0; k < kVec; ++k) low.v[k] = FromFloat<Td>(out.v[k]);
        Store<Td, kVec>(grad_delta + base + c, low);
      }
    });
  }
  CopyRow<kVec>(acc, partial + static_cast<int64_t>(blockIdx.x) * dim, own);
}

}  // namespace

cudaError_t AddRmsNormForward(const float* h, const void* delta, DType delta_dtype, const float* weight,
                              float* sum, void* y, DType y_dtype, float* inv_rms, int64_t rows, int64_t dim,
                              float eps, cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = dim % kRowNormVecWidth == 0 && Aligned16(h) && Aligned16(delta) && Aligned16(weight) &&
                   Aligned16(sum) && Aligned16(y);
  return DispatchTypes(delta_dtype, y_dtype, [&](auto td, auto ty) -> cudaError_t {
    using Td = typename decltype(td)::type;
    using Ty = typename decltype(ty)::type;
    const auto* dp = static_cast<const Td*>(delta);
    auto* yp = static_cast<Ty*>(y);
    if (vec) {
      AddRmsNormForwardKernel<Td, Ty, kRowNormVecWidth>
          <<<RowNormGrid(rows), RowNormThreads(dim, kRowNormVecWidth), 0, stream>>>(h, dp, weight, sum, yp,
                                                                                    inv_rms, rows, dim, eps);
    } else {
      AddRmsNormForwardKernel<Td, Ty, 1><<<RowNormGrid(rows), RowNormThreads(dim, 1), 0, stream>>>(
          h, dp, weight, sum, yp, inv_rms, rows, dim, eps);
    }
    return cudaGetLastError();
  });
}

cudaError_t AddRmsNormBackward(const void* grad_y, DType grad_y_dtype, const float* grad_sum,
                               const float* sum, const float* weight, const float* inv_rms, float* grad_h,
                               void* grad_delta, DType delta_dtype, float* grad_weight, float* workspace,
                               int64_t workspace_elements, int64_t rows, int64_t dim, cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (rows == 0) return cudaMemsetAsync(grad_weight, 0, sizeof(float) * dim, stream);
  const int64_t blocks =
      std::min({rows, workspace_elements / dim, int64_t{MultiprocessorCount()} * kRowNormBlocksPerSm});
  if (blocks < 1) return cudaErrorInvalidValue;
  const bool vec = dim % kRowNormVecWidth == 0 && Aligned16(grad_y) && Aligned16(grad_sum) &&
                   Aligned16(sum) && Aligned16(weight) && Aligned16(grad_h) && Aligned16(grad_delta) &&
                   Aligned16(workspace);
  const size_t smem = RowNormBackwardSmem(dim);
  const cudaError_t status = DispatchTypes(grad_y_dtype, delta_dtype, [&](auto tg, auto td) -> cudaError_t {
    using Tg = typename decltype(tg)::type;
    using Td = typename decltype(td)::type;
    auto launch = [&](auto kernel, int vec_width) -> cudaError_t {
      if (const cudaError_t e = AllowSharedMemory(kernel, smem); e != cudaSuccess) return e;
      kernel<<<static_cast<unsigned>(blocks), RowNormThreads(dim, vec_width), smem, stream>>>(
          static_cast<const Tg*>(grad_y), grad_sum, sum, weight, inv_rms, grad_h,
          static_cast<Td*>(grad_delta), workspace, rows, dim);
      return cudaGetLastError();
    };
    return vec ? launch(AddRmsNormBackwardKernel<Tg, Td, kRowNormVecWidth>, kRowNormVecWidth)
               : launch(AddRmsNormBackwardKernel<Tg, Td, 1>, 1);
  });
  if (status != cudaSuccess) return status;
  return SumPartialRows(workspace, blocks, dim, grad_weight, stream);
}

}  // namespace tessera::kernels::cuda
