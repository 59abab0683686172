// Tests of kernels/swiglu: the autograd function equals silu(gate) * up composed from LibTorch
// ops bit for bit in fp32 (forward and backward), and an fp64 closed-form derivative; and the
// down projection with the SwiGLU values recomputed (kernels/swiglu_linear) against the two.
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
