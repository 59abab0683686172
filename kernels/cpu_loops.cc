// Run-time choice between the builds of the fused CPU loops (cpu_loops.h). A plain function
// pointer table rather than GCC's target_clones: an `arch=` clone is picked by CPU model, not by
// instruction set (`arch=haswell` runs the baseline on AMD CPUs with AVX2), and a table lets the
// tests run each build on purpose.
#include "kernels/cpu_loops.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tessera::kernels::cpu {
namespace baseline {
extern const CpuLoops kLoops;
}
#if defined(TESSERA_CPU_LOOPS_AVX2)
namespace avx2 {
extern const CpuLoops kLoops;
}
#endif

namespace {

bool CpuHasAvx2() {
#if defined(TESSERA_CPU_LOOPS_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

struct Active {
  const CpuLoops* loops;
  const char* name;
};

Active Choose() {
  const char* forced = std::getenv("TESSERA_CPU_LOOPS");
  const bool avx2 = CpuHasAvx2();
  if (forced != nullptr && *forced != '\0') {
    if (std::strcmp(forced, "baseline") == 0) return {&baseline::kLoops, "baseline"};
    if (std::strcmp(forced, "avx2") != 0 || !avx2) {
      // Runs before logging is set up (at the first kernel call): plain stderr, then stop, since
      // a run on a build the user did not ask for would be silently different.
      std::fprintf(stderr, "TESSERA_CPU_LOOPS=%s: expected \"baseline\" or \"avx2\"%s\n", forced,
                   std::strcmp(forced, "avx2") == 0 ? " (this CPU has no AVX2)" : "");
      std::exit(2);
    }
  }
  if (avx2) return {CpuLoopsNamed("avx2"), "avx2"};
  return {&baseline::kLoops, "baseline"};
}

const Active& ActiveLoops() {
  static const Active active = Choose();
  return active;
}

}  // namespace

const CpuLoops* CpuLoopsNamed(const char* name) {
  if (std::strcmp(name, "baseline") == 0) return &baseline::kLoops;
#if defined(TESSERA_CPU_LOOPS_AVX2)
  if (std::strcmp(name, "avx2") == 0 && CpuHasAvx2()) return &avx2::kLoops;
#endif
  return nullptr;
}

const char* ActiveCpuLoopsName() { return ActiveLoops().name; }

void RmsNormForwardRows(const float* x, const float* w, float* y, float* inv_rms, int64_t begin, int64_t end,
                        int64_t dim, float eps) {
  ActiveLoops().loops->rms_norm_forward_rows(x, w, y, inv_rms, begin, end, dim, eps);
}

void RmsNormBackwardRows(const float* grad_y, const float* x, const float* w, const float* inv_rms,
                         float* grad_x, float* grad_w_partial, int64_t begin, int64_t end, int64_t dim) {
  ActiveLoops().loops->rms_norm_backward_rows(grad_y, x, w, inv_rms, grad_x, grad_w_partial, begin, end, dim);
}

void AddRmsNormForwardRows(const float* h, const float* delta, const float* w, float* sum, float* y,
                           float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps) {
  ActiveLoops().loops->add_rms_norm_forward_rows(h, delta, w, sum, y, inv_rms, begin, end, dim, eps);
}

void AddRmsNormForwardRowsBf16(const float* h, const uint16_t* delta, const float* w, float* sum, float* y,
                               float* inv_rms, int64_t begin, int64_t end, int64_t dim, float eps) {
  ActiveLoops().loops->add_rms_norm_forward_rows_bf16(h, delta, w, sum, y, inv_rms, begin, end, dim, eps);
}

void AddRmsNormBackwardRows(const float* grad_y, const float* grad_sum, const float* sum, const float* w,
                            const float* inv_rms, float* grad_h, float* grad_w_partial, int64_t begin,
                            int64_t end, int64_t dim) {
  ActiveLoops().loops->add_rms_norm_backward_rows(grad_y, grad_sum, sum, w, inv_rms, grad_h, grad_w_partial,
                                                  begin, end, dim);
}

void RotateRow(const float* in, float* out, const float* cos, const float* sin, int64_t half, float sign) {
  ActiveLoops().loops->rotate_row(in, out, cos, sin, half, sign);
}

void AdamWElements(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t begin,
                   int64_t end, const AdamWScalars& s) {
  ActiveLoops().loops->adamw_elements(param, grad, exp_avg, exp_avg_sq, begin, end, s);
}

void AdamWElementsBf16(float* master, uint16_t* param_bf16, const float* grad, float* exp_avg,
                       float* exp_avg_sq, int64_t begin, int64_t end, const AdamWScalars& s) {
  ActiveLoops().loops->adamw_elements_bf16(master, param_bf16, grad, exp_avg, exp_avg_sq, begin, end, s);
}

double SumSquaresF64(const float* x, int64_t n) { return ActiveLoops().loops->sum_squares_f64(x, n); }

}  // namespace tessera::kernels::cpu
