// Tests of kernels/swiglu: the fused fp32 CPU function equals silu(g) * u, value and gradient.
#include "kernels/swiglu.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("Swiglu matches silu(gate) * up forward and backward") {
  torch::manual_seed(10);
  auto gate_up = (3 * torch::randn({3, 7, 2 * 40})).requires_grad_();
  auto y = tessera::kernels::Swiglu(gate_up);
  CATCH_REQUIRE(y.sizes() == torch::IntArrayRef({3, 7, 40}));
  auto halves = gate_up.chunk(2, -1);
  auto ref = torch::silu(halves[0]) * halves[1];
  // fp32, same formula: differences are expf rounding only.
  CATCH_CHECK(torch::allclose(y, ref, 1e-5, 1e-6));
  auto g = torch::randn_like(y);
  auto grad = torch::autograd::grad({y}, {gate_up}, {g})[0];
  auto grad_ref = torch::autograd::grad({ref}, {gate_up}, {g})[0];
  CATCH_CHECK(torch::allclose(grad, grad_ref, 1e-5, 1e-5));
}
