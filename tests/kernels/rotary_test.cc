// Tests of kernels/rotary: the autograd function equals the reference built from plain ops, and
// has the defining property of rotary embeddings (scores depend on relative position only).
#include "kernels/rotary.h"

#include <torch/torch.h>

#include <cmath>
#include <utility>

#include "tests/catch_compat.h"

using tessera::kernels::ApplyRotary;
using tessera::kernels::ApplyRotaryReference;
using tessera::kernels::MakeRotaryTables;

CATCH_TEST_CASE("ApplyRotary matches the reference forward and backward") {
  torch::manual_seed(1);
  auto tables = MakeRotaryTables(16, 8, 10000.0, torch::kCPU);
  auto x = torch::randn({2, 16, 3, 8}, torch::dtype(torch::kDouble).requires_grad(true));
  auto y = ApplyRotary(x, tables);
  auto y_ref = ApplyRotaryReference(x, tables);
  CATCH_CHECK(torch::allclose(y, y_ref, 1e-12, 1e-12));
  auto g = torch::randn_like(y);
  auto gx = torch::autograd::grad({y}, {x}, {g})[0];
  auto gx_ref = torch::autograd::grad({y_ref}, {x}, {g})[0];
  CATCH_CHECK(torch::allclose(gx, gx_ref, 1e-12, 1e-12));
  // A rotation preserves the norm of every (position, head) vector; the tables are stored in
  // fp32, so cos^2 + sin^2 = 1 holds to fp32 rounding (~1e-7), not to fp64.
  CATCH_CHECK(torch::allclose(y.norm(2, -1), x.norm(2, -1), 1e-6, 1e-6));
}

CATCH_TEST_CASE("rotary scores depend only on the distance between positions") {
  torch::manual_seed(2);
  const int64_t seq = 12, dim = 16;
  auto tables = MakeRotaryTables(seq, dim, 500000.0, torch::kCPU);
  auto q = torch::randn({dim}, torch::kDouble);
  auto k = torch::randn({dim}, torch::kDouble);
  // The same q and k at every position.
  auto qs = ApplyRotary(q.expand({1, seq, 1, dim}).contiguous(), tables)[0].select(1, 0);
  auto ks = ApplyRotary(k.expand({1, seq, 1, dim}).contiguous(), tables)[0].select(1, 0);
  auto scores = torch::matmul(qs, ks.t());  // [seq, seq]
  for (int64_t d = 0; d < 4; ++d) {
    // tables are fp32, so scores agree to fp32 precision of the angles
    CATCH_CHECK(scores[5][5 - d].item<double>() == Approx(scores[9][9 - d].item<double>()).epsilon(1e-5));
  }
}

CATCH_TEST_CASE("the fp32 CPU rotary loop handles strided views and matches the reference") {
  torch::manual_seed(3);
  auto tables = MakeRotaryTables(10, 16, 500000.0, torch::kCPU);
  // q as the model produces it: a slice of a wider fused projection, viewed as heads.
  auto fused = torch::randn({2, 10, 3 * 32}, torch::requires_grad());
  auto q = fused.narrow(-1, 32, 32).view({2, 10, 2, 16});
  auto y = ApplyRotary(q, tables);
  auto y_ref = ApplyRotaryReference(q, tables);
  // Same fp32 products and sums in the same order: equal up to FMA contraction (1 ulp).
  CATCH_CHECK(torch::allclose(y, y_ref, 1e-6, 1e-6));
  auto g = torch::randn_like(y).transpose(1, 2).contiguous().transpose(1, 2);  // strided gradient
  auto gx = torch::autograd::grad({y}, {fused}, {g})[0];
  auto gx_ref = torch::autograd::grad({y_ref}, {fused}, {g})[0];
  CATCH_CHECK(torch::allclose(gx, gx_ref, 1e-6, 1e-6));
}

namespace {

using tessera::kernels::ApplyRotaryFp32Reference;
using tessera::kernels::RotaryTables;

constexpr double kFp32Unit = 1.0 / (1 << 24);  // unit roundoff of fp32 (24-bit significand)
constexpr double kBf16Unit = 1.0 / (1 << 8);   // unit roundoff of bf16 (8-bit significand)

// The rotation of x evaluated in fp64 from x's values and the fp32 tables (both exact in fp64).
torch::Tensor RotateFp64(const torch::Tensor& x, const RotaryTables& tables, bool inverse) {
  const torch::Tensor x64 = x.detach().to(torch::kDouble);
  if (!inverse) return ApplyRotaryReference(x64, tables);
  return ApplyRotaryReference(x64, {tables.cos, -tables.sin});
}

// |a|*|cos| + |b|*|sin| for every output element: the scale of the rounding error of
// a*c -+ b*s, which is at most 2u(1+u) times it when each product and the sum round once.
torch::Tensor PairMagnitude(const torch::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2, seq = x.size(1);
  const torch::Tensor x64 = x.detach().to(torch::kDouble).abs();
  const torch::Tensor c = tables.cos.narrow(0, 0, seq).unsqueeze(1).to(torch::kDouble).abs();
  const torch::Tensor s = tables.sin.narrow(0, 0, seq).unsqueeze(1).to(torch::kDouble).abs();
  const torch::Tensor m = x64.narrow(-1, 0, half) * c + x64.narrow(-1, half, half) * s;
  const torch::Tensor m_b = x64.narrow(-1, half, half) * c + x64.narrow(-1, 0, half) * s;
  return torch::cat({m, m_b}, -1);
}

// Largest (|actual - exact| - bound) over the elements: <= 0 when every element is in bounds.
double WorstExcess(const torch::Tensor& actual, const torch::Tensor& exact, const torch::Tensor& bound) {
  return ((actual.detach().to(torch::kDouble) - exact).abs() - bound).max().item<double>();
}

// q as the model produces it: a strided [B, T, H, D] view of the fused q|k|v projection output.
torch::Tensor StridedQ(int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads, int64_t dim,
                       torch::ScalarType dtype) {
  const torch::Tensor fused = torch::randn({batch, seq, (heads + 2 * kv_heads) * dim}).to(dtype);
  return fused.split_with_sizes({heads * dim, kv_heads * dim, kv_heads * dim}, -1)[0].view(
      {batch, seq, heads, dim});
}

}  // namespace

CATCH_TEST_CASE("the fp32 rotary reference is the fp32 CPU path bit for bit and within fp32 rounding") {
  torch::manual_seed(4);
  const auto tables = MakeRotaryTables(32, 64, 500000.0, torch::kCPU);
  const torch::Tensor q = StridedQ(2, 32, 4, 2, 64, torch::kFloat).requires_grad_();
  const torch::Tensor y = ApplyRotary(q, tables);
  // The CPU loop and the reference both round each product and each sum once, in the same order.
  CATCH_CHECK(torch::equal(y, ApplyRotaryFp32Reference(q.detach(), tables)));
  const torch::Tensor g = torch::randn_like(y);
  const torch::Tensor gq = torch::autograd::grad({y}, {q}, {g})[0];
  CATCH_CHECK(torch::equal(gq, ApplyRotaryFp32Reference(g, tables, /*inverse=*/true)));
  // Two rounded products and one rounded sum: |error| <= 2u(1+u)(|a c| + |b s|), u = 2^-24; the
  // bound below adds a further 2u of slack for the fp64 evaluation of the magnitude itself.
  for (const bool inverse : {false, true}) {
    const torch::Tensor& in = inverse ? g : q;
    const torch::Tensor bound = 2 * kFp32Unit * (1 + 2 * kFp32Unit) * PairMagnitude(in, tables);
    const torch::Tensor ref = ApplyRotaryFp32Reference(in.detach(), tables, inverse);
    CATCH_CHECK(WorstExcess(ref, RotateFp64(in, tables, inverse), bound) <= 0);
  }
}

CATCH_TEST_CASE("the fp32 rotary reference in bf16 is as close to fp64 as the ATen bf16 path or closer") {
  torch::manual_seed(5);
  const auto tables = MakeRotaryTables(64, 128, 500000.0, torch::kCPU);
  const torch::Tensor q = StridedQ(2, 64, 4, 2, 128, torch::kBFloat16);
  for (const bool inverse : {false, true}) {
    CATCH_INFO("inverse " << inverse);
    const torch::Tensor exact = RotateFp64(q, tables, inverse);
    const torch::Tensor ref = ApplyRotaryFp32Reference(q, tables, inverse);
    CATCH_CHECK(ref.scalar_type() == torch::kBFloat16);
    // The fp32 result r is within d = 2u32(1+2u32)(|a c| + |b s|) of exact; one rounding to
    // bf16 adds at most u16 |r| <= u16 (|exact| + d).
    const torch::Tensor d = 2 * kFp32Unit * (1 + 2 * kFp32Unit) * PairMagnitude(q, tables);
    CATCH_CHECK(WorstExcess(ref, exact, kBf16Unit * exact.abs() + d * (1 + kBf16Unit)) <= 0);
    // ATen's path (CPU bf16 today, CUDA bf16 without the fused kernel) rounds the tables, each
    // product and the sum to bf16.
    const torch::Tensor aten = inverse ? ApplyRotary(q, {tables.cos, -tables.sin}) : ApplyRotary(q, tables);
    const torch::Tensor err_ref = (ref.to(torch::kDouble) - exact).abs();
    const torch::Tensor err_aten = (aten.to(torch::kDouble) - exact).abs();
    CATCH_CHECK(err_ref.max().item<double>() <= err_aten.max().item<double>());
    CATCH_CHECK(err_ref.mean().item<double>() <= err_aten.mean().item<double>());
    // The fp32 result is correctly rounded to bf16 nearly everywhere (ties with the fp32 error are
    // rare); ATen's is far less often.
    const double ref_exact = (ref == exact.to(torch::kBFloat16)).to(torch::kDouble).mean().item<double>();
    const double aten_exact = (aten == exact.to(torch::kBFloat16)).to(torch::kDouble).mean().item<double>();
    CATCH_INFO("correctly rounded: fp32 reference " << ref_exact << ", ATen bf16 " << aten_exact);
    CATCH_CHECK(ref_exact >= 0.99);
    CATCH_CHECK(ref_exact >= aten_exact);
  }
}

CATCH_TEST_CASE("scaled rotary frequencies: Llama 3.1's bands and linear scaling") {
  using tessera::kernels::RotaryInverseFrequencies;
  using tessera::kernels::RotaryScaling;
  const RotaryScaling llama31{.kind = RotaryScaling::Kind::kLlama3,
                              .factor = 8,
                              .low_freq_factor = 1,
                              .high_freq_factor = 4,
                              .original_max_positions = 8192};
  const torch::Tensor inv = RotaryInverseFrequencies(128, 500000.0, llama31);
  CATCH_REQUIRE(inv.sizes() == torch::IntArrayRef({64}));
  // transformers 5.24's _compute_llama3_parameters for Llama 3.1 8B (computed there in fp32, so
  // compared to 1e-6 relative): i = 28 keeps its frequency (wavelength 1956 < 8192 / 4), 30 and 34
  // are blended, 36 and 63 are divided by 8 (wavelength above 8192).
  const std::pair<int64_t, double> expected[] = {{0, 1.0},
                                                 {28, 0.0032114461064338684},
                                                 {30, 0.0013718936825171113},
                                                 {34, 0.0001785077911335975},
                                                 {36, 7.784655463183299e-05},
                                                 {63, 3.068925877869333e-07}};
  for (const auto& [i, value] : expected) {
    CATCH_CAPTURE(i);
    CATCH_CHECK(std::abs(inv[i].item<double>() / value - 1) < 1e-6);
  }
  // Linear: every frequency over the factor, so position p of the scaled tables is position
  // p / factor of the unscaled ones.
  const RotaryScaling linear{.kind = RotaryScaling::Kind::kLinear, .factor = 4};
  const torch::Tensor plain = RotaryInverseFrequencies(16, 10000.0, {});
  CATCH_CHECK(torch::allclose(RotaryInverseFrequencies(16, 10000.0, linear), plain / 4, 0, 0));
  const auto scaled = MakeRotaryTables(9, 16, 10000.0, torch::kCPU, linear);
  const auto unscaled = MakeRotaryTables(3, 16, 10000.0, torch::kCPU);
  CATCH_CHECK(torch::allclose(scaled.cos[8], unscaled.cos[2], 1e-7, 1e-7));
  CATCH_CHECK(torch::allclose(scaled.sin[4], unscaled.sin[1], 1e-7, 1e-7));
}

CATCH_TEST_CASE("per-token rotary positions: each row rotated as the reference does at its own positions") {
  torch::manual_seed(4);
  auto tables = MakeRotaryTables(32, 8, 10000.0, torch::kCPU);
  // Row 0 restarts at 0 after 5 tokens; row 1 starts at an offset of 20.
  const torch::Tensor positions =
      torch::tensor({0, 1, 2, 3, 4, 0, 1, 2, 20, 21, 22, 23, 24, 25, 26, 27}, torch::kInt64).view({2, 8});
  const auto per_token = tessera::kernels::RotaryTablesAt(tables, positions);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {  // the fused fp32 loop and the ATen path
    auto x = torch::randn({2, 8, 3, 8}, torch::dtype(dtype).requires_grad(true));
    auto y = tessera::kernels::ApplyRotaryPerToken(x, per_token);
    // The reference, token by token, with the tables' row at that token's position.
    std::vector<torch::Tensor> rows;
    for (int64_t b = 0; b < 2; ++b) {
      std::vector<torch::Tensor> tokens;
      for (int64_t t = 0; t < 8; ++t) {
        const int64_t p = positions[b][t].item<int64_t>();
        const tessera::kernels::RotaryTables one{tables.cos.narrow(0, p, 1), tables.sin.narrow(0, p, 1)};
        tokens.push_back(ApplyRotaryReference(x.narrow(0, b, 1).narrow(1, t, 1), one));
      }
      rows.push_back(torch::cat(tokens, 1));
    }
    const torch::Tensor y_ref = torch::cat(rows, 0);
    // The same products of the same fp32 table entries; fp32 rounds each on its own (~1e-7).
    const double tol = dtype == torch::kFloat ? 1e-6 : 1e-12;
    CATCH_CHECK(torch::allclose(y, y_ref, tol, tol));
    auto g = torch::randn_like(y);
    auto gx = torch::autograd::grad({y}, {x}, {g})[0];
    auto gx_ref = torch::autograd::grad({y_ref}, {x}, {g})[0];
    CATCH_CHECK(torch::allclose(gx, gx_ref, tol, tol));
  }
  // Positions 0..seq-1 in every row are exactly ApplyRotary.
  auto x = torch::randn({2, 8, 3, 8});
  const auto counting = tessera::kernels::RotaryTablesAt(tables, torch::arange(8).repeat({2, 1}));
  CATCH_CHECK(torch::equal(tessera::kernels::ApplyRotaryPerToken(x, counting), ApplyRotary(x, tables)));
}
