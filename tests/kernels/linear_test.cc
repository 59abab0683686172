// Tests of kernels/linear: fp32 is torch::linear; the emulated bf16 path equals a product of
// bf16-rounded operands accumulated in fp32, forward and backward.
#include "kernels/linear.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("fp32 Linear is x W^T with fp32 gradients") {
  torch::manual_seed(8);
  auto x = torch::randn({3, 4, 16}, torch::requires_grad());
  auto w = torch::randn({8, 16}, torch::requires_grad());
  auto y = tessera::kernels::Linear(x, w);
  CATCH_CHECK(torch::allclose(y, torch::matmul(x, w.t()), 1e-5, 1e-5));
}

CATCH_TEST_CASE("bf16 Linear rounds operands to bf16 and accumulates in fp32") {
  torch::manual_seed(9);
  auto x = torch::randn({2, 5, 64}).to(torch::kBFloat16).requires_grad_();
  auto w = torch::randn({32, 64}, torch::requires_grad());
  auto y = tessera::kernels::Linear(x, w);
  CATCH_CHECK(y.scalar_type() == torch::kBFloat16);
  // The exact reference in fp64 from the bf16-rounded operands; the result differs from it by
  // the final rounding to bf16 (relative 2^-9) plus fp32 accumulation error (negligible).
  auto w16 = w.detach().to(torch::kBFloat16).to(torch::kDouble);
  auto ref = torch::matmul(x.detach().to(torch::kDouble), w16.t());
  CATCH_CHECK(torch::allclose(y.to(torch::kDouble), ref, 4e-3, 1e-2));
  auto g = torch::randn({2, 5, 32}).to(torch::kBFloat16);
  auto grads = torch::autograd::grad({y}, {x, w}, {g});
  CATCH_CHECK(grads[0].scalar_type() == torch::kBFloat16);
  CATCH_CHECK(grads[1].scalar_type() == torch::kFloat);
  auto g64 = g.to(torch::kDouble).reshape({-1, 32});
  auto grad_w_ref = torch::mm(g64.t(), x.detach().to(torch::kDouble).reshape({-1, 64}));
  // grad_w is accumulated in fp32 from bf16 values: only fp32 summation error over 10 rows.
  CATCH_CHECK(torch::allclose(grads[1].to(torch::kDouble), grad_w_ref, 1e-5, 1e-4));
  auto grad_x_ref = torch::matmul(g.to(torch::kDouble), w16);
  CATCH_CHECK(torch::allclose(grads[0].to(torch::kDouble), grad_x_ref, 4e-3, 1e-2));
}
