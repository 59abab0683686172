// Plain loops written so that GCC vectorises them (-O3, see kernels/CMakeLists.txt); each hot
// function is cloned for AVX2+FMA and for baseline x86-64 and dispatched by the loader (ifunc),
// so the binary stays portable while using the vector units this machine has. Reductions
// accumulate in fp32 as LibTorch's kernels do. `omp simd` (with -fopenmp-simd, no OpenMP runtime)
// lets the reductions vectorise without relaxing floating-point rules elsewhere.
#include "kernels/cpu_loops.h"

#include <cmath>
#include <cstdint>
#include <cstring>

// Not under ThreadSanitizer: it instruments the ifunc resolver, which the loader runs before
// the sanitizer's runtime exists, and every binary would crash at start.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define TS_VECTOR_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define TS_VECTOR_CLONES
#endif

namespace tessera::kernels::cpu {

TS_VECTOR_CLONES
void RmsNormForwardRows(const float* x, const float* w, float* y, float* inv_rms, int64_t begin, int64_t end,
                        int64_t dim, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < dim; ++i) sum += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(sum / static_cast<float>(dim) + eps);
    inv_rms[r] = inv;
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

TS_VECTOR_CLONES
void RmsNormBackwardRows(const float* grad_y, const float* x, const float* w, const float* inv_rms,
                         float* grad_x, float* grad_w_partial, int64_t begin, int64_t end, int64_t dim) {
  // With n = x * inv: y = n * w, and
  //   grad_x = inv * (g*w - n * mean(g*w*n)),   grad_w = sum over rows of g * n.
  for (int64_t r = begin; r < end; ++r) {
    const float* gr = grad_y + r * dim;
    const float* xr = x + r * dim;
    float* gx = grad_x + r * dim;
    const float inv = inv_rms[r];
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < dim; ++i) dot += gr[i] * w[i] * xr[i];
    const float scale = dot * inv * inv / static_cast<float>(dim);
    for (int64_t i = 0; i < dim; ++i) {
      gx[i] = inv * (gr[i] * w[i] - xr[i] * scale);
      grad_w_partial[i] += gr[i] * xr[i] * inv;
    }
  }
}

TS_VECTOR_CLONES
void RotateRow(const float* in, float* out, const float* cos, const float* sin, int64_t half, float sign) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = in[i], b = in[i + half], c = cos[i], s = sign * sin[i];
    out[i] = a * c - b * s;
    out[i + half] = b * c + a * s;
  }
}

TS_VECTOR_CLONES
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

namespace {

// fp32 -> bf16 by round to nearest even on the bit pattern; NaN becomes the quiet NaN 0x7fc0.
inline uint16_t RoundToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (value != value) return 0x7fc0;
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace

TS_VECTOR_CLONES
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

TS_VECTOR_CLONES
double SumSquaresF64(const float* x, int64_t n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return sum;
}

}  // namespace tessera::kernels::cpu
