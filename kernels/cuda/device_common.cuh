// Pieces shared by Tessera's CUDA kernels (.cu files only: this header needs nvcc): fp32 <->
// storage conversions, 16-byte vector accesses, block sums, the dispatch over storage types, and
// the block and grid sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels::cuda {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N consecutive elements moved as one access (two for 8 floats); 16-byte alignment at most,
// which is what the dispatchers check.
template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> Load(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void Store(T* p, const Pack<T, N>& value) {
  *reinterpret_cast<Pack<T, N>*>(p) = value;
}

// ---- block reductions -----------------------------------------------------------------------

// Shared floats a BlockSum needs: one per warp (32 at most) and the broadcast slot; a multiple of
// 4 so that what follows in shared memory stays 16-byte aligned.
inline constexpr int kRedSlots = 36;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block, returned to every thread. blockDim.x is a multiple of 32; `red` holds
// kRedSlots floats. Every thread of the block must call it (it synchronises).
__device__ __forceinline__ float BlockSum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // the previous call's readers of red[32] are done
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = WarpSum(lane < warps ? red[lane] : 0.f);
    if (lane == 0) red[32] = v;
  }
  __syncthreads();
  return red[32];
}

// ---- host-side helpers ----------------------------------------------------------------------

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<A>{}, TypeTag<B>{}) for the element types named by a and b.
template <typename F>
cudaError_t DispatchTypes(DType a, DType b, F&& f) {
  auto second = [&](auto ta) -> cudaError_t {
    switch (b) {
      case DType::kFloat32:
        return f(ta, TypeTag<float>{});
      case DType::kBFloat16:
        return f(ta, TypeTag<__nv_bfloat16>{});
    }
    return cudaErrorInvalidValue;
  };
  switch (a) {
    case DType::kFloat32:
      return second(TypeTag<float>{});
    case DType::kBFloat16:
      return second(TypeTag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// Threads per block for one block per row: enough for one pass over the row in accesses of `vec`
// elements, a multiple of 32, between one warp and max_threads.
inline int RowThreads(int64_t dim, int vec, int max_threads) {
  const int64_t needed = (dim + vec - 1) / vec;
  const int64_t rounded = (needed + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(rounded, 32, max_threads));
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Multiprocessors of the current device, cached per device (a launch asks on every call).
inline int MultiprocessorCount() {
  static std::atomic<int> cached[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  if (device >= 0 && device < 64) {
    if (const int n = cached[device].load(std::memory_order_relaxed); n > 0) return n;
  }
  int count = 1;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count < 1) {
    count = 1;
  }
  if (device >= 0 && device < 64) cached[device].store(count, std::memory_order_relaxed);
  return count;
}

}  // namespace tessera::kernels::cuda
