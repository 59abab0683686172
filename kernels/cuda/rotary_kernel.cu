// Fused rotary embedding (see rotary_kernel.h for the formulas and layouts).
//
// A block covers whole token positions (b, t): threadIdx.x runs over groups of kVec pairs within
// the head vector, threadIdx.y over heads and threadIdx.z over further tokens when the heads of
// one token leave threads spare (the model's grouped key heads). Each thread loads its cos/sin
// values once per token and reuses them for every head it visits, so the tables are read once
// per token rather than once per head. A warp reads consecutive heads: with contiguous heads
// that is one contiguous span of the projection row.
//
// kVec pairs per thread (8 bf16 or 4 fp32: one 16-byte access per half of the head vector) when
// head_dim/2 is a multiple of kVec and every pointer and stride is 16-byte aligned; otherwise one
// pair per thread. The products and sums use the _rn intrinsics, which nvcc never contracts into
// FMAs, so the rounding is the CPU loop's and the reference's exactly.
#include "kernels/cuda/rotary_kernel.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/device_common.cuh"

namespace tessera::kernels::cuda {
namespace {

constexpr int kThreads = 256;   // threads per block at most
constexpr int kMaxBlockZ = 64;  // CUDA's limit on blockDim.z

// Pairs per thread on the vectorised path: one 16-byte access per half of the head vector (8 bf16
// or 4 fp32). Wider fp32 accesses would hold 16 table values per thread across the head loop and
// need 63 registers, halving the blocks a multiprocessor holds, for no fewer instructions.
template <typename T>
constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

// Rotates kVec pairs of one head vector: a at xa, b at xa + half, written to oa and oa + half.
template <typename T, int kVec>
__device__ __forceinline__ void RotatePairs(const T* xa, T* oa, int half, const Pack<float, kVec>& c,
                                            const Pack<float, kVec>& s) {
  const Pack<T, kVec> a = Load<T, kVec>(xa);
  const Pack<T, kVec> b = Load<T, kVec>(xa + half);
  Pack<T, kVec> out_a, out_b;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const float af = ToFloat(a.v[k]), bf = ToFloat(b.v[k]);
    out_a.v[k] = FromFloat<T>(__fsub_rn(__fmul_rn(af, c.v[k]), __fmul_rn(bf, s.v[k])));
    out_b.v[k] = FromFloat<T>(__fadd_rn(__fmul_rn(bf, c.v[k]), __fmul_rn(af, s.v[k])));
  }
  Store<T, kVec>(oa, out_a);
  Store<T, kVec>(oa + half, out_b);
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    RotaryKernel(const T* __restrict__ x, RotaryInput in, const float* __restrict__ cos_table,
                 const float* __restrict__ sin_table, T* __restrict__ out, float sign) {
  const int half = static_cast<int>(in.head_dim / 2);  // the dispatcher checks it fits
  const int heads = static_cast<int>(in.heads);
  const int vecs = half / kVec;
  const int64_t tokens = in.batch * in.seq;
  const int64_t token_step = static_cast<int64_t>(gridDim.x) * blockDim.z;
  for (int64_t token = static_cast<int64_t>(blockIdx.x) * blockDim.z + threadIdx.z; token < tokens;
       token += token_step) {
    const int64_t bi = token / in.seq, t = token - bi * in.seq;
    const T* xt = x + bi * in.stride_batch + t * in.stride_seq;
    T* ot = out + token * in.heads * in.head_dim;
    for (int v = threadIdx.x; v < vecs; v += blockDim.x) {
      const int i = v * kVec;
      const Pack<float, kVec> c = Load<float, kVec>(cos_table + t * half + i);
      Pack<float, kVec> s = Load<float, kVec>(sin_table + t * half + i);
#pragma unroll
      for (int k = 0; k < kVec; ++k) s.v[k] *= sign;  // +-1: exact
      for (int h = threadIdx.y; h < heads; h += blockDim.y) {
        RotatePairs<T, kVec>(xt + h * in.stride_head + i, ot + h * in.head_dim + i, half, c, s);
      }
    }
  }
}

// A stride in bytes that keeps 16-byte alignment from row to row; dimensions of size 1 never step.
bool StrideAligned16(int64_t size, int64_t stride, int64_t element_bytes) {
  return size <= 1 || (stride * element_bytes) % 16 == 0;
}

bool Vectorisable(const void* x, const RotaryInput& in, int64_t element_bytes, const float* cos_table,
                  const float* sin_table, const void* out) {
  const int64_t half = in.head_dim / 2;
  return half % (16 / element_bytes) == 0 && Aligned16(x) && Aligned16(out) && Aligned16(cos_table) &&
         Aligned16(sin_table) && StrideAligned16(in.batch, in.stride_batch, element_bytes) &&
         StrideAligned16(in.seq, in.stride_seq, element_bytes) &&
         StrideAligned16(in.heads, in.stride_head, element_bytes);
}

template <typename T, int kVec>
cudaError_t Launch(const void* x, const RotaryInput& in, const float* cos_table, const float* sin_table,
                   void* out, float sign, cudaStream_t stream) {
  const int64_t vecs = in.head_dim / 2 / kVec;
  const int bx = static_cast<int>(std::min<int64_t>(vecs, kThreads));
  const int by = static_cast<int>(std::min<int64_t>(in.heads, kThreads / bx));
  const int64_t tokens = in.batch * in.seq;
  const int bz =
      static_cast<int>(std::clamp<int64_t>(std::min<int64_t>(kThreads / (bx * by), tokens), 1, kMaxBlockZ));
  const int64_t blocks = std::min<int64_t>((tokens + bz - 1) / bz, int64_t{1} << 30);
  RotaryKernel<T, kVec><<<static_cast<unsigned>(blocks), dim3(bx, by, bz), 0, stream>>>(
      static_cast<const T*>(x), in, cos_table, sin_table, static_cast<T*>(out), sign);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchFor(const void* x, const RotaryInput& in, const float* cos_table, const float* sin_table,
                      void* out, float sign, cudaStream_t stream) {
  return Vectorisable(x, in, sizeof(T), cos_table, sin_table, out)
             ? Launch<T, kVecWidth<T>>(x, in, cos_table, sin_table, out, sign, stream)
             : Launch<T, 1>(x, in, cos_table, sin_table, out, sign, stream);
}

}  // namespace

cudaError_t ApplyRotaryKernel(const void* x, const RotaryInput& shape, DType dtype, const float* cos_table,
                              const float* sin_table, void* out, RotaryDirection direction,
                              cudaStream_t stream) {
  if (shape.batch < 0 || shape.seq < 0 || shape.heads < 0 || shape.head_dim <= 0 || shape.head_dim % 2 != 0 ||
      shape.heads > INT_MAX || shape.head_dim / 2 > INT_MAX) {
    return cudaErrorInvalidValue;
  }
  if (shape.batch == 0 || shape.seq == 0 || shape.heads == 0) return cudaSuccess;
  const float sign = direction == RotaryDirection::kInverse ? -1.0f : 1.0f;
  switch (dtype) {
    case DType::kFloat32:
      return LaunchFor<float>(x, shape, cos_table, sin_table, out, sign, stream);
    case DType::kBFloat16:
      return LaunchFor<__nv_bfloat16>(x, shape, cos_table, sin_table, out, sign, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace tessera::kernels::cuda
