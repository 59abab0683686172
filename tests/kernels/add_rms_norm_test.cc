// Tests of kernels/add_rms_norm on the CPU: the fused loops against the fp64 reference (values and
// the gradients of h, delta and the weight), against the ATen composition they replace in the
// model (h + delta, then kernels::RmsNorm) bit for bit, with either output left unused, and the
// errors for inputs of the wrong shape.
#include "kernels/add_rms_norm.h"

#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

#include "kernels/rms_norm.h"
#include "tests/catch_compat.h"

namespace {

using tessera::kernels::AddRmsNorm;
using tessera::kernels::AddRmsNormOutput;
using tessera::kernels::AddRmsNormReference;

constexpr double kEps = 1e-5;

// |actual - expected| <= rtol * |expected| + atol_rel * max|expected|, elementwise; "" or the
// worst element.
std::string Compare(const torch::Tensor& actual, const torch::Tensor& expected, double rtol,
                    double atol_rel) {
  const torch::Tensor a = actual.detach().to(torch::kDouble);
  const torch::Tensor e = expected.detach().to(torch::kDouble);
  if (a.sizes() != e.sizes()) return "shape mismatch";
  const double scale = e.abs().max().item<double>();
  const torch::Tensor excess = (a - e).abs() - (rtol * e.abs() + atol_rel * scale);
  if (excess.max().item<double>() <= 0) return "";
  const int64_t i = excess.flatten().argmax().item<int64_t>();
  std::ostringstream out;
  out << "element " << i << ": got " << a.flatten()[i].item<double>() << ", expected "
      << e.flatten()[i].item<double>() << " (max |expected| " << scale << ")";
  return out.str();
}

struct Inputs {
  torch::Tensor h, delta, w, grad_sum, grad_y;
};

// Rows of different scales (so inv_rms differs per row), a delta of the sublayer's dtype, a
// weight away from zero, and upstream gradients for both outputs.
Inputs MakeInputs(std::vector<int64_t> shape, torch::ScalarType delta_dtype, torch::ScalarType out_dtype,
                  uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  const int64_t dim = shape.back();
  Inputs in;
  in.h = torch::randn(shape) * torch::exp(torch::randn(shape).narrow(-1, 0, 1));
  in.delta = (0.5 * torch::randn(shape)).to(delta_dtype);
  in.w = torch::rand({dim}) + 0.5;
  in.grad_sum = torch::randn(shape);
  in.grad_y = torch::randn(shape).to(out_dtype);
  return in;
}

struct Result {
  torch::Tensor sum, normed, grad_h, grad_delta, grad_w;
};

// Forward and backward of `f` (AddRmsNorm or the composition) on fresh leaves holding `in`.
template <typename F>
Result Run(const Inputs& in, F f) {
  torch::Tensor h = in.h.clone().requires_grad_();
  torch::Tensor delta = in.delta.clone().requires_grad_();
  torch::Tensor w = in.w.clone().requires_grad_();
  const AddRmsNormOutput out = f(h, delta, w);
  auto grads = torch::autograd::grad({out.sum, out.normed}, {h, delta, w}, {in.grad_sum, in.grad_y});
  return {out.sum.detach(), out.normed.detach(), grads[0], grads[1], grads[2]};
}

}  // namespace

CATCH_TEST_CASE("AddRmsNorm on the CPU matches the fp64 reference in value and gradient") {
  struct Case {
    std::vector<int64_t> shape;
    torch::ScalarType delta, out;
  };
  for (const Case& c : std::vector<Case>{{{3, 5, 64}, torch::kFloat, torch::kFloat},
                                         {{2, 7, 67}, torch::kFloat, torch::kFloat},  // a tail after 8 lanes
                                         {{4, 9, 96}, torch::kBFloat16, torch::kBFloat16},  // the bf16 model
                                         {{1, 3, 40}, torch::kBFloat16, torch::kFloat}}) {
    CATCH_INFO("shape " << c.shape << ", delta " << c.delta << ", out " << c.out);
    const Inputs in = MakeInputs(c.shape, c.delta, c.out, 5);
    const Result r = Run(in, [&](auto& h, auto& d, auto& w) { return AddRmsNorm(h, d, w, kEps, c.out); });
    CATCH_CHECK(r.sum.scalar_type() == torch::kFloat);
    CATCH_CHECK(r.normed.scalar_type() == c.out);
    CATCH_CHECK(r.grad_h.scalar_type() == torch::kFloat);
    CATCH_CHECK(r.grad_delta.scalar_type() == c.delta);
    CATCH_CHECK(r.grad_w.scalar_type() == torch::kFloat);

    // fp64 on exactly the stored values.
    torch::Tensor h = in.h.to(torch::kDouble).requires_grad_();
    torch::Tensor d = in.delta.to(torch::kDouble).requires_grad_();
    torch::Tensor w = in.w.to(torch::kDouble).requires_grad_();
    const AddRmsNormOutput ref = AddRmsNormReference(h, d, w, kEps);
    auto g = torch::autograd::grad({ref.sum, ref.normed}, {h, d, w},
                                   {in.grad_sum.to(torch::kDouble), in.grad_y.to(torch::kDouble)});
    // Tolerances. The sum is one fp32 rounding (2^-24 relative). fp32 results of sums of <= 96
    // products and a square root are within ~1e-6 relative: 1e-5. grad_h subtracts two terms of
    // the row's scale, so its error is absolute at that scale: 1e-5 of the largest value on top.
    // grad_w sums 15..36 rows in fp32: 1e-5 relative plus that absolute allowance. A bf16 output
    // or gradient is one round-to-nearest of the fp32 result (2^-8 relative): 2^-7.
    const double out_rtol = c.out == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
    const double delta_rtol = c.delta == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
    CATCH_CHECK(Compare(r.sum, ref.sum, 1e-7, 0) == "");
    CATCH_CHECK(Compare(r.normed, ref.normed, out_rtol, 1e-6) == "");
    CATCH_CHECK(Compare(r.grad_h, g[0], 1e-5, 1e-5) == "");
    CATCH_CHECK(Compare(r.grad_delta, g[1], delta_rtol, 1e-5) == "");
    CATCH_CHECK(Compare(r.grad_w, g[2], 1e-5, 1e-5) == "");
  }
}

CATCH_TEST_CASE("AddRmsNorm on the CPU gives the composition's bits, forward and backward") {
  // The model took h + delta, then kernels::RmsNorm, before the fusion: the same fp32 operations
  // in the same order (the residual path's gradient joins the norm's by one addition either way),
  // so a run's numbers do not change with it.
  for (torch::ScalarType delta_dtype : {torch::kFloat, torch::kBFloat16}) {
    for (torch::ScalarType out : {torch::kFloat, torch::kBFloat16}) {
      CATCH_INFO("delta " << delta_dtype << ", out " << out);
      const Inputs in = MakeInputs({2, 33, 128}, delta_dtype, out, 6);
      const Result fused = Run(in, [&](auto& h, auto& d, auto& w) { return AddRmsNorm(h, d, w, kEps, out); });
      const Result composed = Run(in, [&](auto& h, auto& d, auto& w) {
        torch::Tensor sum = h + d;
        return AddRmsNormOutput{sum, tessera::kernels::RmsNorm(sum, w, kEps, out)};
      });
      CATCH_CHECK(torch::equal(fused.sum, composed.sum));
      CATCH_CHECK(torch::equal(fused.normed, composed.normed));
      CATCH_CHECK(torch::equal(fused.grad_h, composed.grad_h));
      CATCH_CHECK(torch::equal(fused.grad_delta, composed.grad_delta));
      CATCH_CHECK(torch::equal(fused.grad_w, composed.grad_w));
    }
  }
}

CATCH_TEST_CASE("AddRmsNorm's backward with only one of its outputs used") {
  const Inputs in = MakeInputs({3, 4, 32}, torch::kFloat, torch::kFloat, 7);
  // Only the normalised output: the gradient of h is the norm's alone.
  torch::Tensor h = in.h.clone().requires_grad_();
  torch::Tensor d = in.delta.clone().requires_grad_();
  torch::Tensor w = in.w.clone().requires_grad_();
  auto grads =
      torch::autograd::grad({AddRmsNorm(h, d, w, kEps, torch::kFloat).normed}, {h, d, w}, {in.grad_y});
  const torch::Tensor x = (in.h + in.delta).requires_grad_();
  const torch::Tensor wr = in.w.clone().requires_grad_();
  auto ref = torch::autograd::grad({tessera::kernels::RmsNormReference(x, wr, kEps)}, {x, wr}, {in.grad_y});
  // fp32 both sides, different reduction orders: rounding only (see above).
  CATCH_CHECK(Compare(grads[0], ref[0], 1e-5, 1e-5) == "");
  CATCH_CHECK(torch::equal(grads[0], grads[1]));  // d sum / d delta is the identity
  CATCH_CHECK(Compare(grads[2], ref[1], 1e-5, 1e-5) == "");
  // Only the sum: both of its inputs receive its gradient unchanged.
  torch::Tensor h2 = in.h.clone().requires_grad_();
  torch::Tensor d2 = in.delta.clone().requires_grad_();
  auto sum_grads =
      torch::autograd::grad({AddRmsNorm(h2, d2, in.w, kEps, torch::kFloat).sum}, {h2, d2}, {in.grad_sum});
  CATCH_CHECK(torch::equal(sum_grads[0], in.grad_sum));
  CATCH_CHECK(torch::equal(sum_grads[1], in.grad_sum));
}

CATCH_TEST_CASE("AddRmsNorm names the shapes it cannot take") {
  const torch::Tensor h = torch::randn({2, 8});
  try {
    AddRmsNorm(h, torch::randn({2, 7}), torch::ones({8}), kEps, torch::kFloat);
    CATCH_FAIL("a delta of another shape was accepted");
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    CATCH_CHECK(message.find("delta [2, 7]") != std::string::npos);
    CATCH_CHECK(message.find("h [2, 8]") != std::string::npos);
  }
  try {
    AddRmsNorm(h, torch::randn({2, 8}), torch::ones({7}), kEps, torch::kFloat);
    CATCH_FAIL("a weight of the wrong length was accepted");
  } catch (const c10::Error& e) {
    CATCH_CHECK(std::string(e.what_without_backtrace()).find("weight [7]") != std::string::npos);
  }
}
