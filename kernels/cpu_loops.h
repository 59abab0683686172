// Row loops of Tessera's fused CPU kernels (fp32), free of LibTorch so they can be compiled at
// -O3, once for any x86-64 and once with AVX2 (cpu_loops_body.h); the AVX2 build runs where the
// CPU has AVX2, unless TESSERA_CPU_LOOPS=baseline says otherwise. Both builds give the same bits.
// The autograd wrappers (rms_norm.cc, rotary.cc, sum_squares.cc) and the optimizer
// (trainer/flat_adamw.cc) call them over ranges in parallel.
#pragma once

#include <cstdint>

namespace tessera::kernels::cpu {

// y[r] = x[r] * inv_rms[r] * w for rows [begin, end) of width dim; writes inv_rms.
void RmsNormForwardRows(const float* x, const float* w, float* y, float* inv_rms, int64_t begin, int64_t end,
                        int64_t dim, float eps);
// grad_x for rows [begin, end); accumulates this range's grad_w into grad_w_partial (dim).
void RmsNormBackwardRows(const float* grad_y, const float* x, const float* w, const float* inv_rms,
                         float* grad_x, float* grad_w_partial, int64_t begin, int64_t end, int64_t dim);

// sum[r] = h[r] + delta[r], then RmsNormForwardRows of sum: the residual add fused with the norm
// that reads its result (kernels/add_rms_norm.h), one pass over each row.
void AddRmsNormForwardRows(const float* h, const float* delta, const float* w, float* sum, float* y,
                           float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps);
// The same with a bf16 delta (the bit patterns), widened to fp32 as it is read.
void AddRmsNormForwardRowsBf16(const float* h, const uint16_t* delta, const float* w, float* sum, float* y,
                               float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps);
// grad_h = RmsNormBackwardRows' grad_x of `sum` + grad_sum (the sum's own gradient; nullptr for
// none) for rows [begin, end); accumulates grad_w into grad_w_partial (dim).
void AddRmsNormBackwardRows(const float* grad_y, const float* grad_sum, const float* sum, const float* w,
                            const float* inv_rms, float* grad_h, float* grad_w_partial, int64_t begin,
                            int64_t end, int64_t dim);

// Rotates one head vector of width 2*half in place from `in` to `out`: (a, b) at (i, i + half)
// becomes (a cos - sign*b sin, b cos + sign*a sin).
void RotateRow(const float* in, float* out, const float* cos, const float* sin, int64_t half, float sign);

// The per-step scalars of one AdamW update (trainer/flat_adamw.h), precomputed in double and
// rounded to fp32 once, as LibTorch rounds a double scalar operand of an fp32 tensor op.
struct AdamWScalars {
  float grad_scale;  // gradient clipping factor
  float decay;       // 1 - lr * weight_decay (1 for elements that are not decayed)
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float sqrt_bias2;  // sqrt(1 - beta2^t)
  float eps;
  float neg_step;  // -lr / (1 - beta1^t)
};

// One AdamW update of elements [begin, end) in one pass, each element read and written once:
//   g = grad * grad_scale;  p *= decay;  m += (1 - b1) (g - m);  v = b2 v + (1 - b2) g^2;
//   p += neg_step * m / (sqrt(v) / sqrt_bias2 + eps)
// The same operations in the same order as the composite of LibTorch ops it replaces (lerp_,
// mul_ + addcmul_, sqrt / + eps, addcdiv_): 28 bytes of memory traffic per element instead of ~88.
void AdamWElements(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t begin,
                   int64_t end, const AdamWScalars& s);
// The same update of an fp32 master, also writing the updated master rounded to bf16 (round to
// nearest even, NaN kept as a quiet NaN: LibTorch's fp32 -> bf16 conversion) into `param_bf16`
// (the bf16 bit patterns) in the same pass: 30 bytes per element.
void AdamWElementsBf16(float* master, uint16_t* param_bf16, const float* grad, float* exp_avg,
                       float* exp_avg_sq, int64_t begin, int64_t end, const AdamWScalars& s);

// Sum of x[i]^2 over [0, n), each square formed and accumulated in fp64 (the square of an fp32
// value is exact in fp64), for the gradient norm: one read of the fp32 data, no fp64 copy.
double SumSquaresF64(const float* x, int64_t n);

// One build of the loops above.
struct CpuLoops {
  decltype(&RmsNormForwardRows) rms_norm_forward_rows;
  decltype(&RmsNormBackwardRows) rms_norm_backward_rows;
  decltype(&AddRmsNormForwardRows) add_rms_norm_forward_rows;
  decltype(&AddRmsNormForwardRowsBf16) add_rms_norm_forward_rows_bf16;
  decltype(&AddRmsNormBackwardRows) add_rms_norm_backward_rows;
  decltype(&RotateRow) rotate_row;
  decltype(&AdamWElements) adamw_elements;
  decltype(&AdamWElementsBf16) adamw_elements_bf16;
  decltype(&SumSquaresF64) sum_squares_f64;
};

// The builds: "baseline" (any CPU) always, "avx2" where this CPU has AVX2 (else nullptr).
const CpuLoops* CpuLoopsNamed(const char* name);
// The build the functions above run: "avx2" where the CPU has it, unless the environment sets
// TESSERA_CPU_LOOPS=baseline (or =avx2, refused with an error on a CPU without AVX2).
const char* ActiveCpuLoopsName();

}  // namespace tessera::kernels::cpu
