// Tests of kernels/swiglu: the autograd function equals silu(gate) * up composed from LibTorch
// ops bit for bit in fp32 (forward and backward), and an fp64 closed-form derivative; the CUDA
// kernels' CPU reference (SwigluValuesReference, SwigluGradReference) against the composite in
// fp64; and the down projection with the SwiGLU values recomputed (kernels/swiglu_linear) against
// the two.
#include "kernels/swiglu.h"

#include <torch/torch.h>

#include "kernels/linear.h"
#include "kernels/swiglu_linear.h"
#include "tests/catch_compat.h"

using tessera::kernels::Swiglu;

namespace {

torch::Tensor Composite(const torch::Tensor& gate_up) {
  std::vector<torch::Tensor> halves = gate_up.chunk(2, -1);
  return torch::silu(halves[0]) * halves[1];
}

// |actual - expected| <= rtol * |expected| + atol_rel * max|expected| for every element, in fp64.
bool Close(const torch::Tensor& actual, const torch::Tensor& expected, double rtol, double atol_rel) {
  const torch::Tensor a = actual.to(torch::kDouble), e = expected.to(torch::kDouble);
  const double scale = e.abs().max().item<double>();
  return a.sizes() == e.sizes() && ((a - e).abs() <= rtol * e.abs() + atol_rel * scale).all().item<bool>();
}

}  // namespace

CATCH_TEST_CASE("Swiglu equals the composite silu(gate) * up bit for bit in fp32") {
  torch::manual_seed(5);
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    auto x = (3 * torch::randn({2, 7, 2 * 48})).to(dtype).requires_grad_(true);
    auto x_ref = x.detach().clone().requires_grad_(true);
    auto y = Swiglu(x);
    auto y_ref = Composite(x_ref);
    CATCH_CHECK(torch::equal(y, y_ref));
    auto g = torch::randn_like(y);
    auto gx = torch::autograd::grad({y}, {x}, {g})[0];
    auto gx_ref = torch::autograd::grad({y_ref}, {x_ref}, {g})[0];
    CATCH_CHECK(gx.sizes() == x.sizes());
    CATCH_CHECK(gx.is_contiguous());
    CATCH_CHECK(torch::equal(gx, gx_ref));
  }
}

CATCH_TEST_CASE("Swiglu's gradient is the closed-form derivative (fp64)") {
  torch::manual_seed(6);
  auto x = torch::randn({3, 5, 2 * 16}, torch::dtype(torch::kDouble).requires_grad(true));
  auto y = Swiglu(x);
  auto g = torch::randn_like(y);
  auto gx = torch::autograd::grad({y}, {x}, {g})[0];
  auto a = x.detach().narrow(-1, 0, 16), b = x.detach().narrow(-1, 16, 16);
  auto sig = torch::sigmoid(a);
  // d/da [a sig(a) b] = b sig(a) (1 + a (1 - sig(a))); d/db = a sig(a).
  auto ga = g * b * sig * (1 + a * (1 - sig));
  auto gb = g * a * sig;
  CATCH_CHECK(torch::allclose(gx, torch::cat({ga, gb}, -1), 1e-12, 1e-12));
  CATCH_CHECK(torch::allclose(y, a * sig * b, 1e-12, 1e-12));
}

CATCH_TEST_CASE("The SwiGLU kernel reference equals the composite evaluated in fp64") {
  torch::manual_seed(7);
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    CATCH_INFO(c10::toString(dtype));
    torch::Tensor gate_up = 3 * torch::randn({4, 5, 2 * 40});
    // The sigmoid's saturated ends: exp(-gate) overflows to inf (s = 0) or underflows (s = 1).
    gate_up.narrow(-1, 0, 4).copy_(torch::tensor({-100.0, -30.0, 30.0, 100.0}));
    gate_up = gate_up.to(dtype);
    const torch::Tensor dy = torch::randn({4, 5, 40}).to(dtype);
    // The composite and its autograd gradient in fp64 on exactly the stored values.
    const torch::Tensor x64 = gate_up.to(torch::kDouble).requires_grad_(true);
    const torch::Tensor y64 = Composite(x64);
    const torch::Tensor grad64 = torch::autograd::grad({y64}, {x64}, {dy.to(torch::kDouble)})[0];
    const torch::Tensor y = tessera::kernels::SwigluValuesReference(gate_up);
    const torch::Tensor grad = tessera::kernels::SwigluGradReference(dy, gate_up);
    CATCH_CHECK(y.scalar_type() == dtype);
    CATCH_CHECK(grad.scalar_type() == dtype);
    // fp32: exp (1 ulp), the division and five products round each once, ~10 ulps (6e-7) in all;
    // 1e-5 leaves margin. The gate gradient's factor 1 + g (1 - s) cancels near g = -1.28, where
    // its error is absolute: a few 1e-7 of |dy u|, covered by 1e-5 of the largest value. bf16: one
    // rounding of the fp32 result, at most 2^-8 relative; 2^-7 allows for the fp32 error on top.
    const double rtol = dtype == torch::kBFloat16 ? 1.0 / 128 : 1e-5;
    CATCH_CHECK(Close(y, y64, rtol, 1e-5));
    CATCH_CHECK(Close(grad, grad64, rtol, 1e-5));
  }
  // fp64 input is evaluated in fp64: the same expressions agree to rounding.
  const torch::Tensor x = torch::randn({3, 2 * 16}, torch::kDouble).requires_grad_(true);
  const torch::Tensor dy = torch::randn({3, 16}, torch::kDouble);
  const torch::Tensor y = Composite(x);
  CATCH_CHECK(Close(tessera::kernels::SwigluValuesReference(x.detach()), y, 1e-12, 1e-14));
  CATCH_CHECK(Close(tessera::kernels::SwigluGradReference(dy, x.detach()),
                    torch::autograd::grad({y}, {x}, {dy})[0], 1e-12, 1e-14));
}

CATCH_TEST_CASE("Swiglu rejects an odd last dimension") { CATCH_CHECK_THROWS(Swiglu(torch::randn({2, 7}))); }

CATCH_TEST_CASE("SwigluLinear equals Linear(Swiglu) bit for bit, values and gradients, fp32 and bf16") {
  // The fused function forms the SwiGLU values again in backward with the same operations, and
  // runs the product and its two gradients through kernels/linear's pieces on the process's
  // bf16 path (as Linear does): nothing may differ.
  torch::manual_seed(8);
  for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    CATCH_INFO(c10::toString(dtype));
    const torch::Tensor gate_up = (2 * torch::randn({2, 7, 2 * 24})).to(dtype);
    const torch::Tensor weight = (0.2 * torch::randn({16, 24})).to(dtype);
    const torch::Tensor g = torch::randn({2, 7, 16}).to(dtype);
    auto x = gate_up.clone().requires_grad_(true), w = weight.clone().requires_grad_(true);
    auto x_ref = gate_up.clone().requires_grad_(true), w_ref = weight.clone().requires_grad_(true);
    const torch::Tensor y = tessera::kernels::SwigluLinear(x, w);
    const torch::Tensor y_ref = tessera::kernels::Linear(Swiglu(x_ref), w_ref);
    CATCH_CHECK(torch::equal(y, y_ref));
    y.backward(g);
    y_ref.backward(g);
    CATCH_CHECK(torch::equal(x.grad(), x_ref.grad()));
    CATCH_REQUIRE(w.grad().defined());
    CATCH_CHECK(w.grad().scalar_type() == torch::kFloat);  // a bf16 weight's gradient stays fp32
    CATCH_CHECK(torch::equal(w.grad(), w_ref.grad()));
  }
}
