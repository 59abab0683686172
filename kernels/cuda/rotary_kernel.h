// Fused rotary position embedding CUDA kernel (forward and inverse rotation), in plain CUDA C++
// (raw pointers and a stream; no LibTorch), wrapped as an autograd function by kernels/rotary.cc.
//
// Half-split layout: for x [batch, seq, heads, head_dim] and each pair (i, i + head_dim/2),
//   a = x[b,t,h,i], b = x[b,t,h,i + D/2], c = cos[t,i], s = sign * sin[t,i]
//   out[b,t,h,i]       = a*c - b*s
//   out[b,t,h,i + D/2] = b*c + a*s
// with sign = +1 for the forward rotation and -1 for its inverse (the backward: the transpose of
// a rotation is its inverse). Every product and sum is one fp32 operation rounded on its own (no
// FMA contraction), so the results equal, bit for bit, the fp32 CPU loop (kernels/cpu_loops) and
// kernels::ApplyRotaryFp32Reference; a bf16 output is then one round-to-nearest-even.
//
// x and out are both fp32 or both bf16; the tables are fp32 [>= seq, head_dim/2], contiguous, and
// are never rounded to x's type. x may be strided in batch, sequence and heads (the model passes
// q and k as views of one fused projection output); its last dimension is contiguous. out is a
// contiguous [batch, seq, heads, head_dim] that does not overlap x.
//
// Register use, sm_90, nvcc 13.0 (ptxas -v), no spills, no stack frame:
//   bf16, 8 pairs per thread: 56      fp32, 4 pairs per thread: 46
//   bf16, 1 pair per thread:  32      fp32, 1 pair per thread:  32
// At 256 threads per block that is 4 (bf16) or 5 (fp32) resident blocks per multiprocessor on the
// vectorised path, each thread with two 16-byte loads in flight: enough to keep a memory-bound
// kernel near bandwidth.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace tessera::kernels::cuda {

enum class RotaryDirection : int { kForward = 0, kInverse = 1 };

// Sizes and element strides of x. A stride of a dimension of size 1 is never used.
struct RotaryInput {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t stride_batch = 0, stride_seq = 0, stride_head = 0;
};

// Rotates x into out (see above) with one kernel launch on `stream`. head_dim must be even and
// positive; heads and head_dim / 2 must fit in an int. Returns the launch status (the kernel runs
// asynchronously).
cudaError_t ApplyRotaryKernel(const void* x, const RotaryInput& shape, DType dtype, const float* cos_table,
                              const float* sin_table, void* out, RotaryDirection direction,
                              cudaStream_t stream);

}  // namespace tessera::kernels::cuda
