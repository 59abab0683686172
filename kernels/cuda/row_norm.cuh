// The row loops that the RMSNorm and the add + RMSNorm kernels (rms_norm_kernel.cu,
// add_rms_norm_kernel.cu) share, and their launch sizes. A block owns a row at a time; each
// thread owns the same columns of every row: kVec consecutive elements from threadIdx.x * kVec,
// then every blockDim.x * kVec (kVec = 8 is the vector path, 1 the scalar one). Every sum and
// product is fp32 whatever the storage types. .cu files only: this header needs nvcc.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/device_common.cuh"

namespace tessera::kernels::cuda {

inline constexpr int kRowNormMaxThreads = 512;
inline constexpr int kRowNormVecWidth = 8;     // elements per vector access
inline constexpr int kRowNormBlocksPerSm = 4;  // backward blocks per multiprocessor

// ---- device pieces --------------------------------------------------------------------------

// The columns this thread owns in every row, computed once per kernel (kept in registers, not
// recomputed per row). dim <= kRmsNormMaxDim: int columns.
template <int kVec>
struct OwnColumns {
  int first, step, cols;

  __device__ __forceinline__ explicit OwnColumns(int64_t dim)
      : first(static_cast<int>(threadIdx.x) * kVec),
        step(static_cast<int>(blockDim.x) * kVec),
        cols(static_cast<int>(dim)) {}

  // Calls f(c) for the first column c of each of this thread's groups of kVec.
  template <typename F>
  __device__ __forceinline__ void ForEach(F&& f) const {
    for (int c = first; c < cols; c += step) f(c);
  }
};

// The forward's first pass: inv_rms = 1 / sqrt(mean of v^2 + eps) over the row, returned to every
// thread of the block, where values(c) gives the fp32 values of columns c .. c + kVec - 1.
template <int kVec, typename Values>
__device__ __forceinline__ float RowInvRms(const OwnColumns<kVec>& own, float inv_dim, float eps, float* red,
                                           Values&& values) {
  float sum_sq = 0.f;
  own.ForEach([&](int c) {
    const Pack<float, kVec> v = values(c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum_sq = fmaf(v.v[k], v.v[k], sum_sq);
  });
  return rsqrtf(BlockSum(sum_sq, red) * inv_dim + eps);
}

// The forward's second pass: y = v * inv_rms * w, with v read back from the row `src`.
template <int kVec, typename Ts, typename Ty>
__device__ __forceinline__ void NormaliseRow(const Ts* __restrict__ src, const float* __restrict__ w, float r,
                                             Ty* __restrict__ y, const OwnColumns<kVec>& own) {
  own.ForEach([&](int c) {
    const Pack<Ts, kVec> sp = Load<Ts, kVec>(src + c);
    const Pack<float, kVec> wp = Load<float, kVec>(w + c);
    Pack<Ty, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) out.v[k] = FromFloat<Ty>(ToFloat(sp.v[k]) * r * wp.v[k]);
    Store<Ty, kVec>(y + c, out);
  });
}

// Sets this thread's columns of an fp32 row (in shared memory) to zero.
template <int kVec>
__device__ __forceinline__ void ZeroRow(float* row, const OwnColumns<kVec>& own) {
  Pack<float, kVec> zero;
#pragma unroll
  for (int k = 0; k < kVec; ++k) zero.v[k] = 0.f;
  own.ForEach([&](int c) { Store<float, kVec>(row + c, zero); });
}

// Copies this thread's columns of an fp32 row.
template <int kVec>
__device__ __forceinline__ void CopyRow(const float* __restrict__ from, float* __restrict__ to,
                                        const OwnColumns<kVec>& own) {
  own.ForEach([&](int c) { Store<float, kVec>(to + c, Load<float, kVec>(from + c)); });
}

// The backward's block reduction: sum over the row of grad_y * w * x, returned to every thread.
template <int kVec, typename Tg, typename Tx>
__device__ __forceinline__ float RowGradDot(const Tg* __restrict__ gy, const Tx* __restrict__ x,
                                            const float* __restrict__ w, const OwnColumns<kVec>& own,
                                            float* red) {
  float dot = 0.f;
  own.ForEach([&](int c) {
    const Pack<Tg, kVec> gp = Load<Tg, kVec>(gy + c);
    const Pack<Tx, kVec> xp = Load<Tx, kVec>(x + c);
    const Pack<float, kVec> wp = Load<float, kVec>(w + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dot = fmaf(ToFloat(gp.v[k]) * wp.v[k], ToFloat(xp.v[k]), dot);
  });
  return BlockSum(dot, red);
}

// The backward's second pass over a row: the input gradient inv_rms * grad_y * w - x * coef of
// columns c .. c + kVec - 1 goes to store(c, values), and grad_y * x * inv_rms is added to the
// block's partial weight gradient `acc` (the thread's own columns: no synchronisation).
template <int kVec, typename Tg, typename Tx, typename StoreGrad>
__device__ __forceinline__ void RowInputGrad(const Tg* __restrict__ gy, const Tx* __restrict__ x,
                                             const float* __restrict__ w, float r, float coef, float* acc,
                                             const OwnColumns<kVec>& own, StoreGrad&& store) {
  own.ForEach([&](int c) {
    const Pack<Tg, kVec> gp = Load<Tg, kVec>(gy + c);
    const Pack<Tx, kVec> xp = Load<Tx, kVec>(x + c);
    const Pack<float, kVec> wp = Load<float, kVec>(w + c);
    Pack<float, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) out.v[k] = r * ToFloat(gp.v[k]) * wp.v[k] - ToFloat(xp.v[k]) * coef;
    store(c, out);
    Pack<float, kVec> a = Load<float, kVec>(acc + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) a.v[k] = fmaf(ToFloat(gp.v[k]) * ToFloat(xp.v[k]), r, a.v[k]);
    Store<float, kVec>(acc + c, a);
  });
}

// ---- host side ------------------------------------------------------------------------------

// One block per row, at most 2^30 blocks (grid-stride beyond).
inline unsigned RowNormGrid(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 30));
}

inline int RowNormThreads(int64_t dim, int vec) { return RowThreads(dim, vec, kRowNormMaxThreads); }

// Dynamic shared memory of a backward block: kRedSlots floats, then dim floats of partial
// weight gradient.
inline size_t RowNormBackwardSmem(int64_t dim) {
  return sizeof(float) * static_cast<size_t>(kRedSlots + dim);
}

// A kernel launched with more than 48 KB of dynamic shared memory must opt in to it first.
template <typename Kernel>
cudaError_t AllowSharedMemory(Kernel kernel, size_t smem) {
  constexpr size_t kStaticSmemLimit = 48 * 1024;
  if (smem <= kStaticSmemLimit) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

}  // namespace tessera::kernels::cuda
