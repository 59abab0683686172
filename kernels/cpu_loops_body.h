// The bodies of Tessera's fused fp32 CPU loops (cpu_loops.h), written once and compiled twice:
// cpu_loops_baseline.cc for any x86-64 and cpu_loops_avx2.cc with AVX2 enabled; cpu_loops.cc
// picks one at run time. Each includer defines TS_CPU_LOOPS_ISA, the namespace the functions
// land in, so the two builds never meet at link time.
//
// Both builds give the same bits on every input, so a run does not depend on the CPU it ran on:
// no contraction of a * b + c into an FMA (the files are compiled with -ffp-contract=off), and
// every reduction keeps kLanes partial sums, added in one fixed order, whatever the vector width
// the compiler uses (SSE2 holds them in two registers, AVX2 in one).
//
// Deliberately not `#pragma once`: it is meant to be included once per ISA.
#ifndef TS_CPU_LOOPS_ISA
#error "define TS_CPU_LOOPS_ISA (the namespace of this build) before including cpu_loops_body.h"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu_loops.h"

namespace tessera::kernels::cpu::TS_CPU_LOOPS_ISA {
namespace {

constexpr int kLanes = 8;

// The lanes' sum in a fixed order: a 256-bit vector's halves first, as a vector reduction would.
template <typename T>
inline T CombineLanes(const T* acc) {
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// Sum over i in [0, n) of a[i]^2 in kLanes fixed lanes.
inline float SquaresLanes(const float* a, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * a[i + j];
  }
  for (int j = 0; i + j < n; ++j) acc[j] += a[i + j] * a[i + j];
  return CombineLanes(acc);
}

// fp32 -> bf16 by round to nearest even on the bit pattern; NaN becomes the quiet NaN 0x7fc0.
inline uint16_t RoundToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (value != value) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

void RmsNormForwardRows(const float* x, const float* w, float* y, float* inv_rms, int64_t begin, int64_t end,
                        int64_t dim, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    const float inv = 1.f / std::sqrt(SquaresLanes(xr, dim) / static_cast<float>(dim) + eps);
    inv_rms[r] = inv;
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

void RmsNormBackwardRows(const float* grad_y, const float* x, const float* w, const float* inv_rms,
                         float* grad_x, float* grad_w_partial, int64_t begin, int64_t end, int64_t dim) {
  // With n = x * inv: y = n * w, and
  //   grad_x = inv * (g*w - n * mean(g*w*n)),   grad_w = sum over rows of g * n.
  for (int64_t r = begin; r < end; ++r) {
    const float* gr = grad_y + r * dim;
    const float* xr = x + r * dim;
    float* gx = grad_x + r * dim;
    const float inv = inv_rms[r];
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= dim; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) acc[j] += gr[i + j] * w[i + j] * xr[i + j];
    }
    for (int j = 0; i + j < dim; ++j) acc[j] += gr[i + j] * w[i + j] * xr[i + j];
    const float scale = CombineLanes(acc) * inv * inv / static_cast<float>(dim);
    for (i = 0; i < dim; ++i) {
      gx[i] = inv * (gr[i] * w[i] - xr[i] * scale);
      grad_w_partial[i] += gr[i] * xr[i] * inv;
    }
  }
}

// bf16 -> fp32 is exact: the bf16 bits are the float's upper half.
inline float Widen(float v) { return v; }
inline float Widen(uint16_t bf16) {
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename D>
void AddRmsNormForwardRowsOf(const float* h, const D* delta, const float* w, float* sum, float* y,
                             float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* hr = h + r * dim;
    const D* dr = delta + r * dim;
    float* sr = sum + r * dim;
    for (int64_t i = 0; i < dim; ++i) sr[i] = hr[i] + Widen(dr[i]);
    // The same arithmetic as RmsNormForwardRows on the sum just written (still in cache).
    RmsNormForwardRows(sum, w, y, inv_rms, r, r + 1, dim, eps);
  }
}

void AddRmsNormForwardRows(const float* h, const float* delta, const float* w, float* sum, float* y,
                           float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps) {
  AddRmsNormForwardRowsOf(h, delta, w, sum, y, inv_rms, begin, end, dim, eps);
}

void AddRmsNormForwardRowsBf16(const float* h, const uint16_t* delta, const float* w, float* sum, float* y,
                               float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps) {
  AddRmsNormForwardRowsOf(h, delta, w, sum, y, inv_rms, begin, end, dim, eps);
}

void AddRmsNormBackwardRows(const float* grad_y, const float* grad_sum, const float* sum, const float* w,
                            const float* inv_rms, float* grad_h, float* grad_w_partial, int64_t begin,
                            int64_t end, int64_t dim) {
  for (int64_t r = begin; r < end; ++r) {
    RmsNormBackwardRows(grad_y, sum, w, inv_rms, grad_h, grad_w_partial, r, r + 1, dim);
    // The sum's own gradient (the residual path) joins the norm's: the one addition autograd
    // would make where the two paths meet, done while the row is in cache.
    if (grad_sum != nullptr) {
      float* gh = grad_h + r * dim;
      const float* gs = grad_sum + r * dim;
      for (int64_t i = 0; i < dim; ++i) gh[i] += gs[i];
    }
  }
}

void RotateRow(const float* in, float* out, const float* cos, const float* sin, int64_t half, float sign) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = in[i], b = in[i + half], c = cos[i], s = sign * sin[i];
    out[i] = a * c - b * s;
    out[i + half] = b * c + a * s;
  }
}

void AdamWElements(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t begin,
                   int64_t end, const AdamWScalars& s) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i] * s.grad_scale;
    const float m = exp_avg[i] + s.one_minus_beta1 * (g - exp_avg[i]);
    const float v = exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * g * g;  // addcmul: (value * t1) * t2
    const float denom = std::sqrt(v) / s.sqrt_bias2 + s.eps;
    param[i] = param[i] * s.decay + s.neg_step * (m / denom);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

void AdamWElementsBf16(float* master, uint16_t* param_bf16, const float* grad, float* exp_avg,
                       float* exp_avg_sq, int64_t begin, int64_t end, const AdamWScalars& s) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i] * s.grad_scale;
    const float m = exp_avg[i] + s.one_minus_beta1 * (g - exp_avg[i]);
    const float v = exp_avg_sq[i] * s.beta2 + s.one_minus_beta2 * g * g;
    const float denom = std::sqrt(v) / s.sqrt_bias2 + s.eps;
    const float p = master[i] * s.decay + s.neg_step * (m / denom);
    master[i] = p;
    param_bf16[i] = RoundToBf16(p);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

double SumSquaresF64(const float* x, int64_t n) {
  // The square of an fp32 value is exact in fp64; only the additions round.
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  }
  for (int j = 0; i + j < n; ++j) acc[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  return CombineLanes(acc);
}

}  // namespace

// This build's entry points, in one table for cpu_loops.cc's dispatch.
extern const CpuLoops kLoops = {
    .rms_norm_forward_rows = RmsNormForwardRows,
    .rms_norm_backward_rows = RmsNormBackwardRows,
    .add_rms_norm_forward_rows = AddRmsNormForwardRows,
    .add_rms_norm_forward_rows_bf16 = AddRmsNormForwardRowsBf16,
    .add_rms_norm_backward_rows = AddRmsNormBackwardRows,
    .rotate_row = RotateRow,
    .adamw_elements = AdamWElements,
    .adamw_elements_bf16 = AdamWElementsBf16,
    .sum_squares_f64 = SumSquaresF64,
};

}  // namespace tessera::kernels::cpu::TS_CPU_LOOPS_ISA
