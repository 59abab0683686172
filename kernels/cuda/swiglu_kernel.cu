// Fused SwiGLU forward and backward (see swiglu_kernel.h for the formulas and layouts).
//
// Both kernels are elementwise over the rows x F positions j of the gate half and memory bound:
// the forward moves 3 elements per position (g, u in; y out), the backward 5 (dy, g, u in; two
// gradients out). Each thread takes kVec consecutive positions of one row per step, read and
// written as 16-byte vectors (8 bf16 or 4 fp32) when F is a multiple of kVec and every pointer is
// 16-byte aligned (then every row start and the up half's offset F are aligned too); otherwise
// one element at a time. A grid of at most one wave of resident blocks strides over the
// positions; the (row, column) cursor of a thread advances by the grid's stride with an
// add and a carry, so the loop needs no 64-bit division.
#include "kernels/cuda/swiglu_kernel.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/device_common.cuh"

namespace tessera::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Resident blocks per multiprocessor (64K registers): the forward fits 8 (2048 threads, the most
// a Hopper or A100 multiprocessor runs) in 32 registers a thread. The bf16 backward holds three
// input vectors and two output vectors at once: at 32 registers it spills, so it gets 40 and 6
// blocks (75% occupancy; with 72 KB of loads in flight per multiprocessor that is still enough
// to keep HBM busy). The grid is at most one such wave: more blocks would only wait.
constexpr int kForwardBlocksPerSm = 8;
constexpr int kBackwardBlocksPerSm = 6;

// Position of a thread in the grid-stride loop over [rows, per_row] vectors: index = row *
// per_row + col with 0 <= col < per_row. Step() adds the grid's stride, row_step * per_row +
// col_step. Columns, the stride and its parts are 32-bit (per_row <= kSwigluMaxF, so col +
// col_step < 2^31), which keeps the loop's registers down; only the row is 64-bit.
struct Cursor {
  int64_t row;
  int col;
  __device__ __forceinline__ explicit Cursor(int per_row) {
    const int index = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    row = index / per_row;
    col = index % per_row;
  }
  __device__ __forceinline__ void Step(int row_step, int col_step, int per_row) {
    row += row_step;
    col += col_step;
    if (col >= per_row) {
      col -= per_row;
      ++row;
    }
  }
};

__device__ __forceinline__ float Sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, kForwardBlocksPerSm)
    SwigluForwardKernel(const T* __restrict__ gate_up, T* __restrict__ y, int64_t rows, int64_t f) {
  const int per_row = static_cast<int>(f / kVec);
  const int stride = static_cast<int>(gridDim.x * blockDim.x);
  const int row_step = stride / per_row, col_step = stride % per_row;
  for (Cursor at(per_row); at.row < rows; at.Step(row_step, col_step, per_row)) {
    const T* gate = gate_up + at.row * 2 * f + at.col * kVec;
    const Pack<T, kVec> gp = Load<T, kVec>(gate);
    const Pack<T, kVec> up = Load<T, kVec>(gate + f);
    Pack<T, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float g = ToFloat(gp.v[k]);
      out.v[k] = FromFloat<T>(g * Sigmoid(g) * ToFloat(up.v[k]));
    }
    Store<T, kVec>(y + at.row * f + at.col * kVec, out);
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, kBackwardBlocksPerSm)
    SwigluBackwardKernel(const T* __restrict__ grad_y, const T* __restrict__ gate_up, T* __restrict__ grad,
                         int64_t rows, int64_t f) {
  const int per_row = static_cast<int>(f / kVec);
  const int stride = static_cast<int>(gridDim.x * blockDim.x);
  const int row_step = stride / per_row, col_step = stride % per_row;
  for (Cursor at(per_row); at.row < rows; at.Step(row_step, col_step, per_row)) {
    const int64_t in = at.row * 2 * f + at.col * kVec;  // gate position in gate_up and grad
    const Pack<T, kVec> dyp = Load<T, kVec>(grad_y + at.row * f + at.col * kVec);
    const Pack<T, kVec> gp = Load<T, kVec>(gate_up + in);
    const Pack<T, kVec> up = Load<T, kVec>(gate_up + in + f);
    Pack<T, kVec> grad_gate, grad_up;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float dy = ToFloat(dyp.v[k]), g = ToFloat(gp.v[k]), u = ToFloat(up.v[k]);
      const float s = Sigmoid(g);
      grad_gate.v[k] = FromFloat<T>(dy * u * s * (1.0f + g * (1.0f - s)));
      grad_up.v[k] = FromFloat<T>(dy * (g * s));
    }
    Store<T, kVec>(grad + in, grad_gate);
    Store<T, kVec>(grad + in + f, grad_up);
  }
}

// ---- host side ------------------------------------------------------------------------------

// Calls f(TypeTag<T>{}) (device_common.cuh) for the storage type named by dtype.
template <typename F>
cudaError_t DispatchType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(TypeTag<float>{});
    case DType::kBFloat16:
      return f(TypeTag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// Blocks for `vectors` positions: one per kThreads of them, at most blocks_per_sm per
// multiprocessor (the rest is grid-stride).
unsigned BlocksFor(int64_t vectors, int blocks_per_sm) {
  const int64_t needed = (vectors + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(needed, int64_t{MultiprocessorCount()} * blocks_per_sm));
}

bool ValidSizes(int64_t rows, int64_t f) { return rows >= 0 && f >= 0 && f <= kSwigluMaxF; }

}  // namespace

cudaError_t SwigluForward(const void* gate_up, void* y, DType dtype, int64_t rows, int64_t f,
                          cudaStream_t stream) {
  if (!ValidSizes(rows, f)) return cudaErrorInvalidValue;
  if (rows == 0 || f == 0) return cudaSuccess;
  return DispatchType(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr int kVec = 16 / sizeof(T);
    const auto* in = static_cast<const T*>(gate_up);
    auto* out = static_cast<T*>(y);
    if (f % kVec == 0 && Aligned16(gate_up) && Aligned16(y)) {
      SwigluForwardKernel<T, kVec>
          <<<BlocksFor(rows * (f / kVec), kForwardBlocksPerSm), kThreads, 0, stream>>>(in, out, rows, f);
    } else {
      SwigluForwardKernel<T, 1>
          <<<BlocksFor(rows * f, kForwardBlocksPerSm), kThreads, 0, stream>>>(in, out, rows, f);
    }
    return cudaGetLastError();
  });
}

cudaError_t SwigluBackward(const void* grad_y, const void* gate_up, void* grad, DType dtype, int64_t rows,
                           int64_t f, cudaStream_t stream) {
  if (!ValidSizes(rows, f)) return cudaErrorInvalidValue;
  if (rows == 0 || f == 0) return cudaSuccess;
  return DispatchType(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr int kVec = 16 / sizeof(T);
    const auto* dy = static_cast<const T*>(grad_y);
    const auto* in = static_cast<const T*>(gate_up);
    auto* out = static_cast<T*>(grad);
    if (f % kVec == 0 && Aligned16(grad_y) && Aligned16(gate_up) && Aligned16(grad)) {
      SwigluBackwardKernel<T, kVec>
          <<<BlocksFor(rows * (f / kVec), kBackwardBlocksPerSm), kThreads, 0, stream>>>(dy, in, out, rows, f);
    } else {
      SwigluBackwardKernel<T, 1>
          <<<BlocksFor(rows * f, kBackwardBlocksPerSm), kThreads, 0, stream>>>(dy, in, out, rows, f);
    }
    return cudaGetLastError();
  });
}

}  // namespace tessera::kernels::cuda
