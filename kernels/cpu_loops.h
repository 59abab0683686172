// Row loops of Tessera's fused CPU kernels (fp32), free of LibTorch so they can be compiled at
// -O3 with per-ISA clones (AVX2+FMA and baseline x86-64, picked at load time). The autograd
// wrappers in rms_norm.cc and rotary.cc call them over row ranges in parallel.
#pragma once

#include <cstdint>

namespace tessera::kernels::cpu {

// y[r] = x[r] * inv_rms[r] * w for rows [begin, end) of width dim; writes inv_rms.
void RmsNormForwardRows(const float* x, const float* w, float* y, float* inv_rms, int64_t begin, int64_t end,
                        int64_t dim, float eps);
// grad_x for rows [begin, end); accumulates this range's grad_w into grad_w_partial (dim).
void RmsNormBackwardRows(const float* grad_y, const float* x, const float* w, const float* inv_rms,
                         float* grad_x, float* grad_w_partial, int64_t begin, int64_t end, int64_t dim);

// Rotates one head vector of width 2*half in place from `in` to `out`: (a, b) at (i, i + half)
// becomes (a cos - sign*b sin, b cos + sign*a sin).
void RotateRow(const float* in, float* out, const float* cos, const float* sin, int64_t half, float sign);

}  // namespace tessera::kernels::cpu
