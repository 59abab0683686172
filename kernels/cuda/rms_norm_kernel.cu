// Fused RMSNorm forward and backward (see rms_norm_kernel.h for the formulas and layouts); the row
// loops are row_norm.cuh's, shared with the fused add + RMSNorm (add_rms_norm_kernel.cu).
//
// Forward: one block per row (grid-stride over rows). Pass 1 sums x^2 in fp32 (each thread over
// its columns, then warp shuffles and one shared-memory step across warps); pass 2 re-reads the
// row (from L1/L2: a row is at most 128 KB) and writes y. Threads read 8 consecutive elements at
// once (16 bytes of bf16, 2 x 16 bytes of fp32) when dim is a multiple of 8 and every pointer is
// 16-byte aligned; otherwise one element at a time.
//
// Backward, pass 1: a fixed number of blocks (4 per multiprocessor, at most one per row), each
// striding over rows. Per row: dot = sum_k grad_y*w*x (block reduction), then grad_x, and the
// row's grad_y*x*inv_rms is added to the block's fp32 partial weight gradient in shared memory.
// A thread always owns the same columns, so the accumulation needs no synchronisation. Each block
// writes its partial row to the workspace. Pass 2 sums the partial rows per column in a fixed
// order, so grad_w is deterministic (no atomics).
#include "kernels/cuda/rms_norm_kernel.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/row_norm.cuh"

namespace tessera::kernels::cuda {
namespace {

// ---- kernels --------------------------------------------------------------------------------

template <typename Tx, typename Ty, int kVec>
__global__ void __launch_bounds__(kRowNormMaxThreads)
    RmsNormForwardKernel(const Tx* __restrict__ x, const float* __restrict__ w, Ty* __restrict__ y,
                         float* __restrict__ inv_rms, int64_t rows, int64_t dim, float eps) {
  __shared__ float red[kRedSlots];
  const OwnColumns<kVec> own(dim);
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const Tx* xr = x + row * dim;
    const float r = RowInvRms<kVec>(own, inv_dim, eps, red, [&](int c) {
      const Pack<Tx, kVec> xp = Load<Tx, kVec>(xr + c);
      Pack<float, kVec> v;
#pragma unroll
      for (int k = 0; k < kVec; ++k) v.v[k] = ToFloat(xp.v[k]);
      return v;
    });
    if (threadIdx.x == 0) inv_rms[row] = r;
    NormaliseRow<kVec>(xr, w, r, y + row * dim, own);
  }
}

// Dynamic shared memory: kRedSlots floats, then dim floats of partial weight gradient.
template <typename Tx, typename Tg, int kVec>
__global__ void __launch_bounds__(kRowNormMaxThreads)
    RmsNormBackwardKernel(const Tg* __restrict__ gy, const Tx* __restrict__ x, const float* __restrict__ w,
                          const float* __restrict__ inv_rms, Tx* __restrict__ gx, float* __restrict__ partial,
                          int64_t rows, int64_t dim) {
  extern __shared__ float4 smem_raw[];  // float4: 16-byte alignment for the vector accesses
  float* red = reinterpret_cast<float*>(smem_raw);
  float* acc = red + kRedSlots;
  const OwnColumns<kVec> own(dim);
  const float inv_dim = 1.0f / static_cast<float>(dim);
  ZeroRow<kVec>(acc, own);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const Tg* gr = gy + row * dim;
    const Tx* xr = x + row * dim;
    const float r = inv_rms[row];
    const float dot = RowGradDot<kVec>(gr, xr, w, own, red);
    const float coef = r * r * r * dot * inv_dim;
    Tx* gxr = gx + row * dim;
    RowInputGrad<kVec>(gr, xr, w, r, coef, acc, own, [&](int c, const Pack<float, kVec>& grad) {
      Pack<Tx, kVec> out;
#pragma unroll
      for (int k = 0; k < kVec; ++k) out.v[k] = FromFloat<Tx>(grad.v[k]);
      Store<Tx, kVec>(gxr + c, out);
    });
  }
  CopyRow<kVec>(acc, partial + static_cast<int64_t>(blockIdx.x) * dim, own);
}

constexpr int kColTile = 32;    // columns per block (one warp wide: coalesced rows)
constexpr int kPartLanes = 16;  // partial rows summed in parallel per column

// out[c] = sum_p partial[p, c], each thread summing every kPartLanes-th partial row in order,
// then the kPartLanes sums added in order: deterministic.
__global__ void __launch_bounds__(kColTile* kPartLanes)
    ColumnSumKernel(const float* __restrict__ partial, int64_t parts, int64_t dim, float* __restrict__ out) {
  __shared__ float tile[kPartLanes][kColTile + 1];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  float s = 0.f;
  if (c < dim) {
    for (int64_t p = threadIdx.y; p < parts; p += kPartLanes) s += partial[p * dim + c];
  }
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < dim) {
    float total = 0.f;
#pragma unroll
    for (int i = 0; i < kPartLanes; ++i) total += tile[i][threadIdx.x];
    out[c] = total;
  }
}

// ---- host side ------------------------------------------------------------------------------

int64_t BackwardBlocks(int64_t rows) {
  return std::min<int64_t>(rows, int64_t{MultiprocessorCount()} * kRowNormBlocksPerSm);
}

}  // namespace

cudaError_t RmsNormForward(const void* x, DType x_dtype, const float* weight, void* y, DType y_dtype,
                           float* inv_rms, int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = dim % kRowNormVecWidth == 0 && Aligned16(x) && Aligned16(y) && Aligned16(weight);
  return DispatchTypes(x_dtype, y_dtype, [&](auto tx, auto ty) -> cudaError_t {
    using Tx = typename decltype(tx)::type;
    using Ty = typename decltype(ty)::type;
    const auto* xp = static_cast<const Tx*>(x);
    auto* yp = static_cast<Ty*>(y);
    if (vec) {
      RmsNormForwardKernel<Tx, Ty, kRowNormVecWidth>
          <<<RowNormGrid(rows), RowNormThreads(dim, kRowNormVecWidth), 0, stream>>>(xp, weight, yp, inv_rms,
                                                                                    rows, dim, eps);
    } else {
      RmsNormForwardKernel<Tx, Ty, 1>
          <<<RowNormGrid(rows), RowNormThreads(dim, 1), 0, stream>>>(xp, weight, yp, inv_rms, rows, dim, eps);
    }
    return cudaGetLastError();
  });
}

int64_t RmsNormBackwardWorkspaceElements(int64_t rows, int64_t dim) {
  if (rows <= 0 || dim <= 0) return 0;
  return BackwardBlocks(rows) * dim;
}

cudaError_t RmsNormBackward(const void* grad_y, DType grad_y_dtype, const void* x, DType x_dtype,
                            const float* weight, const float* inv_rms, void* grad_x, float* grad_weight,
                            float* workspace, int64_t workspace_elements, int64_t rows, int64_t dim,
                            cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || dim > kRmsNormMaxDim) return cudaErrorInvalidValue;
  if (rows == 0) return cudaMemsetAsync(grad_weight, 0, sizeof(float) * dim, stream);
  const int64_t blocks = std::min<int64_t>(rows, workspace_elements / dim);
  if (blocks < 1) return cudaErrorInvalidValue;
  const bool vec = dim % kRowNormVecWidth == 0 && Aligned16(grad_y) && Aligned16(x) && Aligned16(grad_x) &&
                   Aligned16(weight) && Aligned16(workspace);
  const size_t smem = RowNormBackwardSmem(dim);
  const cudaError_t status = DispatchTypes(x_dtype, grad_y_dtype, [&](auto tx, auto tg) -> cudaError_t {
    using Tx = typename decltype(tx)::type;
    using Tg = typename decltype(tg)::type;
    auto launch = [&](auto kernel, int vec_width) -> cudaError_t {
      if (const cudaError_t e = AllowSharedMemory(kernel, smem); e != cudaSuccess) return e;
      kernel<<<static_cast<unsigned>(blocks), RowNormThreads(dim, vec_width), smem, stream>>>(
          static_cast<const Tg*>(grad_y), static_cast<const Tx*>(x), weight, inv_rms,
          static_cast<Tx*>(grad_x), workspace, rows, dim);
      return cudaGetLastError();
    };
    return vec ? launch(RmsNormBackwardKernel<Tx, Tg, kRowNormVecWidth>, kRowNormVecWidth)
               : launch(RmsNormBackwardKernel<Tx, Tg, 1>, 1);
  });
  if (status != cudaSuccess) return status;
  return SumPartialRows(workspace, blocks, dim, grad_weight, stream);
}

cudaError_t SumPartialRows(const float* partial, int64_t parts, int64_t dim, float* out,
                           cudaStream_t stream) {
  if (parts < 1 || dim <= 0) return cudaErrorInvalidValue;
  const unsigned col_blocks = static_cast<unsigned>((dim + kColTile - 1) / kColTile);
  ColumnSumKernel<<<col_blocks, dim3(kColTile, kPartLanes), 0, stream>>>(partial, parts, dim, out);
  return cudaGetLastError();
}

}  // namespace tessera::kernels::cuda
