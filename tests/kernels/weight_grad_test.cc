// Tests of kernels/weight_grad: bf16 parameters whose gradients accumulate in fp32. The model's
// three ways of consuming a parameter (Linear, on both CPU paths and with stacked weights;
// Embedding; Fp32Weight for the norms) are run for 8 micro-steps into a bf16 leaf whose .grad is
// fp32, as the data-parallel reducer sets it up, and the accumulated gradient is compared with
// the fp64 sum of the exact per-step gradients. The same loop through plain autograd (which casts
// each step's gradient to the parameter's dtype) fails the same bound: the tests can fail.
#include "kernels/weight_grad.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <functional>

#include "kernels/linear.h"
#include "tests/catch_compat.h"

namespace {

using tessera::kernels::Bf16MatmulPath;

// A bf16 leaf parameter with an fp32 zero gradient, as grad_reducer.h leaves it.
torch::Tensor Bf16Parameter(torch::IntArrayRef shape) {
  torch::Tensor w = torch::randn(shape).to(torch::kBFloat16).requires_grad_();
  w.mutable_grad() = torch::zeros(shape, torch::kFloat);
  return w;
}

// |actual - ref| <= rel * |ref| + acc * bound elementwise (bound: the exact sum of |terms|).
bool WithinBound(const torch::Tensor& actual, const torch::Tensor& ref, const torch::Tensor& bound,
                 double acc) {
  auto err = (actual.to(torch::kDouble) - ref).abs();
  const bool ok = (err <= acc * bound).all().item<bool>();
  if (!ok) CATCH_WARN("worst error/bound " << (err / bound.clamp_min(1e-300)).max().item<double>() / acc);
  return ok;
}

// Tolerance: fp32 accumulation only. Each micro-step sums at most 40 terms and the 8 steps add 8
// more roundings: 48 u_fp32 = 2^-18.4 of sum|terms|; allowed 2^-16 (a factor 5). One bf16
// rounding of a step's gradient is 2^-9 relative: 128 times the bound, so a lossy path fails.
constexpr double kFp32Accumulation = 1.0 / 65536;

// Runs 8 micro-steps of `step` (forward and backward of one use of `w`; returns the fp64 exact
// gradient of that step and its sum of |terms|) and checks w.grad against their sum.
bool AccumulatesInFp32(const torch::Tensor& w,
                       const std::function<std::pair<torch::Tensor, torch::Tensor>()>& step) {
  auto reference = torch::zeros(w.sizes(), torch::kDouble);
  auto bound = torch::zeros(w.sizes(), torch::kDouble);
  for (int i = 0; i < 8; ++i) {
    auto [exact, terms] = step();
    reference += exact;
    bound += terms;
  }
  CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);
  return WithinBound(w.grad(), reference, bound, kFp32Accumulation);
}

// Linear over bf16 weights [a; b] stacked by rows, by `linear`; the exact gradient per weight.
bool StackedLinearAccumulates(const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                                const torch::Tensor&)>& linear) {
  torch::manual_seed(21);
  torch::Tensor a = Bf16Parameter({16, 48}), b = Bf16Parameter({8, 48});
  torch::Tensor ref_b = torch::zeros({8, 48}, torch::kDouble),
                bound_b = torch::zeros({8, 48}, torch::kDouble);
  const bool a_ok = AccumulatesInFp32(a, [&] {
    auto x = torch::randn({4, 10, 48}).to(torch::kBFloat16);
    auto g = torch::randn({4, 10, 24}).to(torch::kBFloat16);
    linear(x, a, b).backward(g);
    auto x2 = x.to(torch::kDouble).reshape({-1, 48}), g2 = g.to(torch::kDouble).reshape({-1, 24});
    auto ga = g2.narrow(1, 0, 16), gb = g2.narrow(1, 16, 8);
    ref_b += torch::mm(gb.t(), x2);
    bound_b += torch::mm(gb.abs().t(), x2.abs());
    return std::make_pair(torch::mm(ga.t(), x2), torch::mm(ga.abs().t(), x2.abs()));
  });
  return a_ok && WithinBound(b.grad(), ref_b, bound_b, kFp32Accumulation);
}

}  // namespace

CATCH_TEST_CASE(
    "Linear accumulates bf16 weights' gradients in fp32 over 8 micro-steps, stacked weights too") {
  for (Bf16MatmulPath path : {Bf16MatmulPath::kEmulated, Bf16MatmulPath::kNative}) {
    CATCH_INFO("path " << (path == Bf16MatmulPath::kNative ? "native" : "emulated"));
    CATCH_CHECK(StackedLinearAccumulates(
        [path](const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b) {
          return tessera::kernels::Linear(x, {a, b}, path);
        }));
  }
  // Plain autograd over the bf16 leaves: each step's gradient is cast to bf16 before it is added.
  CATCH_CHECK_FALSE(
      StackedLinearAccumulates([](const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b) {
        return torch::linear(x, torch::cat({a, b}));
      }));
}

CATCH_TEST_CASE("Embedding of a bf16 table returns fp32 rows and accumulates its gradient in fp32") {
  auto run = [](const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& embed) {
    torch::manual_seed(22);
    torch::Tensor table = Bf16Parameter({12, 32});
    return AccumulatesInFp32(table, [&] {
      auto ids = torch::randint(0, 12, {4, 10}, torch::kLong);  // repeated rows: sums of 3-4 terms
      auto g = torch::randn({4, 10, 32});
      auto y = embed(table, ids);
      CATCH_CHECK(y.scalar_type() == torch::kFloat);
      y.backward(g);
      auto g2 = g.to(torch::kDouble).reshape({-1, 32});
      auto exact = torch::zeros({12, 32}, torch::kDouble).index_add_(0, ids.reshape({-1}), g2);
      auto terms = torch::zeros({12, 32}, torch::kDouble).index_add_(0, ids.reshape({-1}), g2.abs());
      return std::make_pair(exact, terms);
    });
  };
  CATCH_CHECK(run(
      [](const torch::Tensor& t, const torch::Tensor& ids) { return tessera::kernels::Embedding(t, ids); }));
  CATCH_CHECK_FALSE(run([](const torch::Tensor& t, const torch::Tensor& ids) {
    return torch::embedding(t, ids).to(torch::kFloat);
  }));
}

CATCH_TEST_CASE(
    "Fp32Weight hands an fp32 copy to a kernel and its gradient to the bf16 weight's fp32 .grad") {
  auto run = [](const std::function<torch::Tensor(const torch::Tensor&)>& as_fp32) {
    torch::manual_seed(23);
    torch::Tensor w = Bf16Parameter({32});
    return AccumulatesInFp32(w, [&] {
      auto x = torch::randn({40, 32});
      auto g = torch::randn({40, 32});
      auto y = x * as_fp32(w);
      CATCH_CHECK(y.scalar_type() == torch::kFloat);
      y.backward(g);
      auto prod = g.to(torch::kDouble) * x.to(torch::kDouble);
      return std::make_pair(prod.sum(0), prod.abs().sum(0));
    });
  };
  CATCH_CHECK(run([](const torch::Tensor& w) { return tessera::kernels::Fp32Weight(w); }));
  CATCH_CHECK_FALSE(run([](const torch::Tensor& w) { return w.to(torch::kFloat); }));
}

CATCH_TEST_CASE(
    "fp32 and fp64 weights pass through untouched, and accumulator hooks still fire for bf16 ones") {
  auto w32 = torch::randn({4, 8}, torch::requires_grad());
  CATCH_CHECK(tessera::kernels::Fp32Weight(w32).is_same(w32));
  auto g = torch::randn({4, 8});
  CATCH_CHECK(tessera::kernels::AccumulateWeightGrad(w32, g).is_same(g));
  CATCH_CHECK_FALSE(w32.grad().defined());

  // The reducer counts a parameter's gradient as landed in the post hook of its accumulator node,
  // which runs even though the gradient went around it.
  torch::Tensor w = Bf16Parameter({4, 8});
  int fired = 0;
  auto accumulator = torch::autograd::impl::grad_accumulator(w);
  accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [&fired](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
        ++fired;
        return outputs;
      }));
  auto x = torch::randn({3, 8}).to(torch::kBFloat16);
  tessera::kernels::Linear(x, w).sum().backward();
  CATCH_CHECK(fired == 1);
  CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);
  CATCH_CHECK(w.grad().abs().sum().item<double>() > 0);
  // Without a gradient yet (ZeRO-2 frees them between buckets) one is allocated in fp32.
  w.mutable_grad().reset();
  tessera::kernels::Linear(x, w).sum().backward();
  CATCH_CHECK(fired == 2);
  CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);
}
