// Tests of kernels/cpu_loops: each build of the fused CPU loops (baseline x86-64 and, where the CPU
// has it, AVX2) against an fp64 reference, and the two builds against each other bit for bit, on
// widths around the vector sizes (tails of every length) and row ranges that start mid-buffer.
#include "kernels/cpu_loops.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/catch_compat.h"

namespace cpu = tessera::kernels::cpu;

namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.f, float offset = 0.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = offset + scale * dist(gen);
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The builds this CPU can run: always the baseline, the AVX2 build where the CPU has AVX2.
std::vector<std::pair<std::string, const cpu::CpuLoops*>> Builds() {
  std::vector<std::pair<std::string, const cpu::CpuLoops*>> builds = {
      {"baseline", cpu::CpuLoopsNamed("baseline")}};
  if (const cpu::CpuLoops* avx2 = cpu::CpuLoopsNamed("avx2")) builds.emplace_back("avx2", avx2);
  return builds;
}

// Outputs of every loop on one input shape, for comparing builds.
struct Outputs {
  std::vector<float> y, inv, gx, gw, rot, p, m, v, master;
  std::vector<float> sum, add_y, add_inv, add_gh, add_gw;  // the add + RMSNorm loops
  std::vector<float> sum16, add_y16;                       // ... with a bf16 delta
  std::vector<uint16_t> bf16;
  double sumsq = 0;
};

cpu::AdamWScalars Scalars() {
  // Step 3 of AdamW at lr 1e-3, betas (0.9, 0.95), clipping factor 0.7, decay 0.1.
  return {.grad_scale = 0.7f,
          .decay = static_cast<float>(1 - 1e-3 * 0.1),
          .one_minus_beta1 = 0.1f,
          .beta2 = 0.95f,
          .one_minus_beta2 = static_cast<float>(1 - 0.95),
          .sqrt_bias2 = static_cast<float>(std::sqrt(1 - std::pow(0.95, 3))),
          .eps = 1e-8f,
          .neg_step = static_cast<float>(-1e-3 / (1 - std::pow(0.9, 3)))};
}

Outputs RunAll(const cpu::CpuLoops& loops, int64_t rows, int64_t dim) {
  const auto x = Random(rows * dim, 1, 2.f), w = Random(dim, 2, 0.3f, 1.f), g = Random(rows * dim, 3);
  Outputs o;
  o.y.assign(rows * dim, 0.f);
  o.inv.assign(rows, 0.f);
  // Rows [1, rows): the range need not start at the buffer's first row.
  loops.rms_norm_forward_rows(x.data(), w.data(), o.y.data(), o.inv.data(), 1, rows, dim, 1e-5f);
  o.gx.assign(rows * dim, 0.f);
  o.gw.assign(dim, 0.f);
  loops.rms_norm_backward_rows(g.data(), x.data(), w.data(), o.inv.data(), o.gx.data(), o.gw.data(), 1, rows,
                               dim);
  const auto d = Random(rows * dim, 10), gs = Random(rows * dim, 11);
  o.sum.assign(rows * dim, 0.f);
  o.add_y.assign(rows * dim, 0.f);
  o.add_inv.assign(rows, 0.f);
  loops.add_rms_norm_forward_rows(x.data(), d.data(), w.data(), o.sum.data(), o.add_y.data(),
                                  o.add_inv.data(), 1, rows, dim, 1e-5f);
  std::vector<uint16_t> d16(rows * dim);
  for (size_t i = 0; i < d16.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &d[i], 4);
    d16[i] = static_cast<uint16_t>(bits >> 16);  // truncated: any bf16 values will do
  }
  o.sum16.assign(rows * dim, 0.f);
  o.add_y16.assign(rows * dim, 0.f);
  std::vector<float> inv16(rows, 0.f);
  loops.add_rms_norm_forward_rows_bf16(x.data(), d16.data(), w.data(), o.sum16.data(), o.add_y16.data(),
                                       inv16.data(), 1, rows, dim, 1e-5f);
  o.add_gh.assign(rows * dim, 0.f);
  o.add_gw.assign(dim, 0.f);
  loops.add_rms_norm_backward_rows(g.data(), gs.data(), o.sum.data(), w.data(), o.add_inv.data(),
                                   o.add_gh.data(), o.add_gw.data(), 1, rows, dim);
  const int64_t half = dim / 2;
  const auto c = Random(half, 4), s = Random(half, 5);
  o.rot.assign(2 * half, 0.f);
  loops.rotate_row(x.data(), o.rot.data(), c.data(), s.data(), half, -1.f);
  o.p = Random(rows * dim, 6);
  o.m = Random(rows * dim, 7, 0.01f);
  o.v = Random(rows * dim, 8, 0.0f, 1e-4f);
  const cpu::AdamWScalars sc = Scalars();
  loops.adamw_elements(o.p.data(), g.data(), o.m.data(), o.v.data(), 1, rows * dim, sc);
  o.master = Random(rows * dim, 9);
  o.bf16.assign(rows * dim, 0);
  auto m2 = Random(rows * dim, 7, 0.01f), v2 = Random(rows * dim, 8, 0.0f, 1e-4f);
  loops.adamw_elements_bf16(o.master.data(), o.bf16.data(), g.data(), m2.data(), v2.data(), 0, rows * dim,
                            sc);
  o.sumsq = loops.sum_squares_f64(x.data() + 1, rows * dim - 1);
  return o;
}

}  // namespace

CATCH_TEST_CASE("Each build of the CPU loops matches the fp64 reference") {
  for (const auto& [name, loops] : Builds()) {
    CATCH_INFO("build " << name);
    for (int64_t dim : {1, 7, 8, 9, 16, 31, 64, 67}) {
      CATCH_INFO("dim " << dim);
      const int64_t rows = 3;
      const Outputs o = RunAll(*loops, rows, dim);
      const auto x = Random(rows * dim, 1, 2.f), w = Random(dim, 2, 0.3f, 1.f), g = Random(rows * dim, 3);
      std::vector<double> gw(dim, 0.0);
      for (int64_t r = 1; r < rows; ++r) {
        double ss = 0, dot = 0;
        for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
        const double inv = 1 / std::sqrt(ss / dim + 1e-5);
        // fp32 sums of at most 67 terms: a few ulp relative.
        CATCH_CHECK(std::abs(o.inv[r] - inv) <= 1e-5 * inv);
        for (int64_t i = 0; i < dim; ++i) {
          CATCH_CHECK(std::abs(o.y[r * dim + i] - x[r * dim + i] * inv * w[i]) <=
                      1e-5 * (1 + std::abs(x[r * dim + i] * inv * w[i])));
          dot += double(g[r * dim + i]) * w[i] * x[r * dim + i];
        }
        const double scale = dot * inv * inv / dim;
        for (int64_t i = 0; i < dim; ++i) {
          const double gx = inv * (g[r * dim + i] * double(w[i]) - x[r * dim + i] * scale);
          CATCH_CHECK(std::abs(o.gx[r * dim + i] - gx) <= 1e-4 * (1 + std::abs(gx)));
          gw[i] += double(g[r * dim + i]) * x[r * dim + i] * inv;
        }
      }
      for (int64_t i = 0; i < dim; ++i)
        CATCH_CHECK(std::abs(o.gw[i] - gw[i]) <= 1e-5 * (1 + std::abs(gw[i])));
      double ss = 0;
      for (int64_t i = 1; i < rows * dim; ++i) ss += double(x[i]) * x[i];
      // Exact squares; fp64 additions in another order.
      CATCH_CHECK(std::abs(o.sumsq - ss) <= 1e-15 * ss * rows * dim);
      // One AdamW element in fp64 (the fp32 loop rounds each of ~10 operations).
      const cpu::AdamWScalars sc = Scalars();
      const auto p0 = Random(rows * dim, 6), m0 = Random(rows * dim, 7, 0.01f),
                 v0 = Random(rows * dim, 8, 0.0f, 1e-4f);
      for (int64_t i = 1; i < rows * dim; ++i) {
        const double gi = double(g[i]) * sc.grad_scale;
        const double m = m0[i] + double(sc.one_minus_beta1) * (gi - m0[i]);
        const double v = v0[i] * double(sc.beta2) + double(sc.one_minus_beta2) * gi * gi;
        const double p =
            p0[i] * double(sc.decay) + double(sc.neg_step) * (m / (std::sqrt(v) / sc.sqrt_bias2 + sc.eps));
        CATCH_CHECK(std::abs(o.p[i] - p) <= 1e-6 * (1 + std::abs(p)));
        CATCH_CHECK(std::abs(o.m[i] - m) <= 1e-6 * (1e-3 + std::abs(m)));
      }
      CATCH_CHECK(o.p[0] == p0[0]);  // outside the range: untouched
      // bf16 weights are the master rounded to nearest even.
      for (size_t i = 0; i < o.master.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &o.master[i], 4);
        const uint32_t rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
        CATCH_CHECK(o.bf16[i] == rounded);
      }
    }
  }
}

CATCH_TEST_CASE("The baseline and AVX2 builds of the CPU loops give the same bits") {
  const auto builds = Builds();
  if (builds.size() < 2) {
    CATCH_WARN("this CPU has no AVX2: only the baseline build runs here, nothing to compare");
    return;
  }
  for (int64_t dim : {1, 5, 8, 13, 64, 100, 4096 + 3}) {
    CATCH_INFO("dim " << dim);
    const Outputs a = RunAll(*builds[0].second, 4, dim), b = RunAll(*builds[1].second, 4, dim);
    CATCH_CHECK(SameBits(a.y, b.y));
    CATCH_CHECK(SameBits(a.inv, b.inv));
    CATCH_CHECK(SameBits(a.gx, b.gx));
    CATCH_CHECK(SameBits(a.gw, b.gw));
    CATCH_CHECK(SameBits(a.sum, b.sum));
    CATCH_CHECK(SameBits(a.add_y, b.add_y));
    CATCH_CHECK(SameBits(a.add_inv, b.add_inv));
    CATCH_CHECK(SameBits(a.add_gh, b.add_gh));
    CATCH_CHECK(SameBits(a.add_gw, b.add_gw));
    CATCH_CHECK(SameBits(a.sum16, b.sum16));
    CATCH_CHECK(SameBits(a.add_y16, b.add_y16));
    CATCH_CHECK(SameBits(a.rot, b.rot));
    CATCH_CHECK(SameBits(a.p, b.p));
    CATCH_CHECK(SameBits(a.m, b.m));
    CATCH_CHECK(SameBits(a.v, b.v));
    CATCH_CHECK(SameBits(a.master, b.master));
    CATCH_CHECK(a.bf16 == b.bf16);
    CATCH_CHECK(a.sumsq == b.sumsq);
  }
}

CATCH_TEST_CASE("The loops run the AVX2 build where the CPU has it, unless told otherwise") {
  const char* forced = std::getenv("TESSERA_CPU_LOOPS");
  const std::string expected =
      forced != nullptr && *forced ? forced : (cpu::CpuLoopsNamed("avx2") ? "avx2" : "baseline");
  CATCH_CHECK(std::string(cpu::ActiveCpuLoopsName()) == expected);
  CATCH_CHECK(cpu::CpuLoopsNamed("sse9") == nullptr);
}
