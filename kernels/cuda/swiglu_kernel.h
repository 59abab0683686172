// Fused SwiGLU forward and backward CUDA kernels, in plain CUDA C++ (raw pointers and a stream;
// no LibTorch), called by kernels/swiglu.cc for CUDA tensors. The input is the fused gate|up
// product, row-major and contiguous [rows, 2F]: gate = columns [0, F), up = columns [F, 2F).
//
//   s = sigmoid(g) = 1 / (1 + exp(-g)),  silu(g) = g * s,     g = gate_up[r, j], u = gate_up[r, F + j]
//   forward:  y[r, j]        = silu(g) * u                                         y    [rows, F]
//   backward: grad[r, j]     = dy[r, j] * u * s * (1 + g * (1 - s))   (d/dg)       grad [rows, 2F]
//             grad[r, F + j] = dy[r, j] * silu(g)                     (d/du)
//
// Storage is fp32 or bf16, the same type for every tensor of a call; all arithmetic is fp32 (expf
// and an IEEE division for s), rounded once to the storage type on the way out. One kernel per
// direction writes its whole output: the backward fills both halves of grad in place (no
// concatenation, no temporaries). kernels::SwigluValuesReference / SwigluGradReference
// (kernels/swiglu.h) evaluate the same expressions on the CPU.
//
// Resources (nvcc 13.0, sm_90, 256 threads per block; `ptxas -v`, as cuobjdump
// --dump-resource-usage reports them): no spills, no stack, no shared memory, registers per thread
//   forward:  fp32 vector (x4) 32, scalar 27; bf16 vector (x8) 32, scalar 26   -> 8 blocks per SM
//   backward: fp32 vector (x4) 40, scalar 32; bf16 vector (x8) 40, scalar 27   -> 6 blocks per SM
// The backward is bounded at 40 (__launch_bounds__): at 32 its bf16 vector path spills.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels::cuda {

// Largest F the kernels take: columns are counted in 32-bit integers (the MLP widths of any
// Llama are below 2^16); callers fall back to another implementation above this.
inline constexpr int64_t kSwigluMaxF = int64_t{1} << 30;

// y [rows, f] = silu(gate) * up from gate_up [rows, 2f]. Returns the launch status (the kernel
// runs asynchronously on `stream`).
cudaError_t SwigluForward(const void* gate_up, void* y, DType dtype, int64_t rows, int64_t f,
                          cudaStream_t stream);

// grad [rows, 2f] (gate half, then up half) from grad_y [rows, f] and the forward's gate_up
// [rows, 2f]; every element of grad is overwritten. Returns the launch status.
cudaError_t SwigluBackward(const void* grad_y, const void* gate_up, void* grad, DType dtype, int64_t rows,
                           int64_t f, cudaStream_t stream);

}  // namespace tessera::kernels::cuda
