// Tests of kernels/rms_norm: the fused path equals the op-by-op reference, forward and backward.
#include "kernels/rms_norm.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("RmsNorm matches the reference in value and gradient") {
  torch::manual_seed(0);
  auto x = torch::randn({3, 5, 64}, torch::requires_grad());
  auto w = (torch::rand({64}) + 0.5).requires_grad_();
  auto y = tessera::kernels::RmsNorm(x, w, 1e-5, torch::kFloat);
  auto g = torch::randn_like(y);
  auto grads = torch::autograd::grad({y}, {x, w}, {g});
  auto y_ref = tessera::kernels::RmsNormReference(x, w, 1e-5);
  auto grads_ref = torch::autograd::grad({y_ref}, {x, w}, {g});
  // fp32 with reductions over 64 elements: differences are rounding only (~1e-7 relative).
  CATCH_CHECK(torch::allclose(y, y_ref, 1e-5, 1e-6));
  CATCH_CHECK(torch::allclose(grads[0], grads_ref[0], 1e-4, 1e-5));
  CATCH_CHECK(torch::allclose(grads[1], grads_ref[1], 1e-4, 1e-5));
  // The normalised rows have unit root-mean-square when the weight is one.
  auto unit = tessera::kernels::RmsNorm(x.detach(), torch::ones({64}), 0.0, torch::kFloat);
  CATCH_CHECK(torch::allclose(unit.pow(2).mean(-1), torch::ones({3, 5}), 1e-5, 1e-5));
}

CATCH_TEST_CASE("RmsNorm returns the requested compute dtype and reduces bf16 input in fp32") {
  auto x = torch::randn({4, 32});
  auto y = tessera::kernels::RmsNorm(x.to(torch::kBFloat16), torch::ones({32}), 1e-5, torch::kBFloat16);
  CATCH_CHECK(y.scalar_type() == torch::kBFloat16);
  auto ref =
      tessera::kernels::RmsNormReference(x.to(torch::kBFloat16).to(torch::kFloat), torch::ones({32}), 1e-5);
  // One bf16 rounding of the output: relative error below 2^-8.
  CATCH_CHECK(torch::allclose(y.to(torch::kFloat), ref, 1e-2, 1e-2));
}
