// Tests of kernels/linear: fp32 is torch::linear; both bf16 paths (emulated on the fp32 GEMM, and
// LibTorch's native bf16 GEMM), forced explicitly on every machine, against fp64 references within
// bounds derived from bf16's and fp32's rounding, forward and backward.
#include "kernels/linear.h"

#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("fp32 Linear is x W^T with fp32 gradients") {
  torch::manual_seed(8);
  auto x = torch::randn({3, 4, 16}, torch::requires_grad());
  auto w = torch::randn({8, 16}, torch::requires_grad());
  auto y = tessera::kernels::Linear(x, w);
  CATCH_CHECK(torch::allclose(y, torch::matmul(x, w.t()), 1e-5, 1e-5));
}

namespace {

using tessera::kernels::Bf16MatmulPath;

// |actual - ref| <= rel * |ref| + acc * bound elementwise, where `bound` is the exact sum of
// |products| (fp64) each element accumulates: the form of a floating-point dot product's error.
bool WithinBound(const torch::Tensor& actual, const torch::Tensor& ref, const torch::Tensor& bound,
                 double rel, double acc) {
  auto err = (actual.to(torch::kDouble) - ref).abs();
  auto limit = rel * ref.abs() + acc * bound;
  const bool ok = (err <= limit).all().item<bool>();
  if (!ok) {
    CATCH_WARN("max error " << err.max().item<double>() << ", worst error/limit "
                            << (err / limit.clamp_min(1e-300)).max().item<double>());
  }
  return ok;
}

// Tolerances, derived from bf16's and fp32's rounding (unit roundoff u = 2^-9 for bf16's 8-bit
// significand, 2^-24 for fp32):
//  - every output that is rounded to bf16 at the end (y, grad_x, and grad_W on the native path)
//    is within u_bf16 = 2^-9 of the exact value relative to it; we allow 2^-8 (a factor 2);
//  - accumulating K products of bf16 values in fp32 adds at most K u_fp32 sum|products| (each
//    product of two 8-bit significands is exact in fp32); K <= 64 here, K u_fp32 = 2^-18; we allow
//    2^-16 (a factor 4).
// Anything coarser (a product done in bf16, a lost term) breaks these by orders of magnitude.
constexpr double kBf16Rounding = 1.0 / 256;        // 2^-8
constexpr double kFp32Accumulation = 1.0 / 65536;  // 2^-16

void CheckBf16Linear(Bf16MatmulPath path) {
  torch::manual_seed(9);
  auto x = torch::randn({2, 5, 64}).to(torch::kBFloat16).requires_grad_();
  auto w = torch::randn({32, 64}, torch::requires_grad());
  auto y = tessera::kernels::Linear(x, w, path);
  CATCH_CHECK(y.scalar_type() == torch::kBFloat16);
  // fp64 references from the bf16-rounded operands, and the sums of |products| per element.
  auto x64 = x.detach().to(torch::kDouble);
  auto w16 = w.detach().to(torch::kBFloat16).to(torch::kDouble);
  CATCH_CHECK(WithinBound(y, torch::matmul(x64, w16.t()), torch::matmul(x64.abs(), w16.abs().t()),
                          kBf16Rounding, kFp32Accumulation));

  auto g = torch::randn({2, 5, 32}).to(torch::kBFloat16);
  auto grads = torch::autograd::grad({y}, {x, w}, {g});
  CATCH_CHECK(grads[0].scalar_type() == torch::kBFloat16);
  CATCH_CHECK(grads[1].scalar_type() == torch::kFloat);
  auto g64 = g.to(torch::kDouble).reshape({-1, 32});
  auto x2 = x64.reshape({-1, 64});
  // grad_W = g^T x over 10 rows, kept in fp32 on both paths: no bf16 rounding term.
  CATCH_CHECK(WithinBound(grads[1], torch::mm(g64.t(), x2), torch::mm(g64.abs().t(), x2.abs()), 0.0,
                          kFp32Accumulation));
  CATCH_CHECK(WithinBound(grads[0], torch::matmul(g.to(torch::kDouble), w16),
                          torch::matmul(g.to(torch::kDouble).abs(), w16.abs()), kBf16Rounding,
                          kFp32Accumulation));
}

}  // namespace

// Both paths on every machine, whatever this CPU would pick (the native one is slow on CPUs
// without bf16 units, but exact).
CATCH_TEST_CASE("bf16 Linear, emulated path: bf16 operands, fp32 accumulation, fp32 weight gradient") {
  CheckBf16Linear(Bf16MatmulPath::kEmulated);
}

CATCH_TEST_CASE("bf16 Linear, native path: LibTorch's bf16 GEMM within bf16 rounding") {
  CheckBf16Linear(Bf16MatmulPath::kNative);
}

CATCH_TEST_CASE("the default bf16 path follows the CPU unless TESSERA_BF16_MATMUL forces one") {
  const char* forced = std::getenv("TESSERA_BF16_MATMUL");
  const std::string name = forced ? forced : "";
  const Bf16MatmulPath expected = name == "native"                             ? Bf16MatmulPath::kNative
                                  : name == "emulated"                         ? Bf16MatmulPath::kEmulated
                                  : tessera::kernels::CpuHasNativeBf16Matmul() ? Bf16MatmulPath::kNative
                                                                               : Bf16MatmulPath::kEmulated;
  CATCH_CHECK(tessera::kernels::CpuBf16MatmulPath() == expected);
  CATCH_CHECK(tessera::kernels::DescribeCpuBf16MatmulPath().find(
                  expected == Bf16MatmulPath::kNative ? "native" : "emulated") == 0);
}

namespace {

// Gradient accumulation as the trainer does it: 8 micro-steps, each a forward and backward of
// Linear, the weight gradients summed by autograd into the fp32 .grad. Returns the check of the
// accumulated gradient against the fp64 sum of g_i^T x_i, within fp32 accumulation only (each
// step sums K = 40 rows; the 8 steps add 8 more fp32 roundings: 48 u_fp32 = 2^-18.4; allowed
// 2^-16). `linear` is the product under test.
bool AccumulatedGradIsFp32Exact(
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& linear) {
  torch::manual_seed(11);
  auto w = torch::randn({24, 48}, torch::requires_grad());
  auto reference = torch::zeros({24, 48}, torch::kDouble);
  auto bound = torch::zeros({24, 48}, torch::kDouble);
  for (int step = 0; step < 8; ++step) {
    auto x = torch::randn({4, 10, 48}).to(torch::kBFloat16);
    auto g = torch::randn({4, 10, 24}).to(torch::kBFloat16);
    linear(x, w).backward(g);
    auto x2 = x.to(torch::kDouble).reshape({-1, 48}), g2 = g.to(torch::kDouble).reshape({-1, 24});
    reference += torch::mm(g2.t(), x2);
    bound += torch::mm(g2.abs().t(), x2.abs());
  }
  CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);
  return WithinBound(w.grad(), reference, bound, 0.0, kFp32Accumulation);
}

}  // namespace

CATCH_TEST_CASE("bf16 Linear accumulates weight gradients over 8 micro-steps without bf16 rounding") {
  for (Bf16MatmulPath path : {Bf16MatmulPath::kEmulated, Bf16MatmulPath::kNative}) {
    CATCH_INFO("path " << (path == Bf16MatmulPath::kNative ? "native" : "emulated"));
    CATCH_CHECK(AccumulatedGradIsFp32Exact([path](const torch::Tensor& x, const torch::Tensor& w) {
      return tessera::kernels::Linear(x, w, path);
    }));
  }
  // The test's power: autograd through a bf16 copy of the weight (the product before Linear kept
  // its weight gradient in fp32) rounds each micro-step's gradient to bf16 and fails the bound.
  CATCH_CHECK_FALSE(AccumulatedGradIsFp32Exact([](const torch::Tensor& x, const torch::Tensor& w) {
    return torch::linear(x, w.to(torch::kBFloat16));
  }));
}

CATCH_TEST_CASE("StackRows: consecutive row blocks of one buffer are a view, anything else a copy") {
  using tessera::kernels::StackRows;
  torch::manual_seed(11);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const torch::Tensor buffer = torch::randn({2 + 40 * 8}, torch::TensorOptions().dtype(dtype));
    // q|k|v as the flat buffers hold them: rows 8, 4, 4 of width 8, after an offset.
    const torch::Tensor q = buffer.narrow(0, 2, 64).view({8, 8});
    const torch::Tensor k = buffer.narrow(0, 66, 32).view({4, 8});
    const torch::Tensor v = buffer.narrow(0, 98, 32).view({4, 8});
    const torch::Tensor stacked = StackRows({q, k, v});
    CATCH_CHECK(stacked.data_ptr() == q.data_ptr());
    CATCH_CHECK(stacked.sizes() == torch::IntArrayRef({16, 8}));
    CATCH_CHECK(torch::equal(stacked, torch::cat({q, k, v})));
    // Out of order, a gap, or separate tensors: copies, with the same values as cat.
    for (const std::vector<torch::Tensor>& parts :
         {std::vector<torch::Tensor>{k, q, v}, std::vector<torch::Tensor>{q, v},
          std::vector<torch::Tensor>{q.clone(), k.clone(), v.clone()}}) {
      const torch::Tensor copy = StackRows(parts);
      CATCH_CHECK(copy.data_ptr() != parts[0].data_ptr());
      CATCH_CHECK(torch::equal(copy, torch::cat(parts)));
    }
  }
}

CATCH_TEST_CASE("bf16 Linear over q|k|v held in one buffer equals the separate weights, gradients too") {
  torch::manual_seed(12);
  const torch::Tensor x = torch::randn({2, 5, 8}).to(torch::kBFloat16);
  const torch::Tensor g = torch::randn({2, 5, 16});
  for (auto path : {Bf16MatmulPath::kEmulated, Bf16MatmulPath::kNative}) {
    const torch::Tensor buffer = torch::randn({128}).to(torch::kBFloat16);
    std::vector<torch::Tensor> fused, separate;
    int64_t offset = 0;
    for (int64_t rows : {8, 4, 4}) {
      torch::Tensor w = buffer.narrow(0, offset, rows * 8).view({rows, 8}).detach().requires_grad_(true);
      fused.push_back(w);
      separate.push_back(w.detach().clone().requires_grad_(true));
      offset += rows * 8;
    }
    for (auto* ws : {&fused, &separate}) {
      for (auto& w : *ws) w.mutable_grad() = torch::zeros({w.size(0), 8});  // fp32 .grad, as the reducer's
    }
    const torch::Tensor a = tessera::kernels::Linear(x, fused, path);
    const torch::Tensor b = tessera::kernels::Linear(x, separate, path);
    CATCH_CHECK(torch::equal(a, b));
    (a.to(torch::kFloat) * g).sum().backward();
    (b.to(torch::kFloat) * g).sum().backward();
    for (size_t i = 0; i < fused.size(); ++i) CATCH_CHECK(torch::equal(fused[i].grad(), separate[i].grad()));
  }
}
