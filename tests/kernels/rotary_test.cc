// Tests of kernels/rotary: the autograd function equals the reference built from plain ops, and
// has the defining property of rotary embeddings (scores depend on relative position only).
#include "kernels/rotary.h"

#include <torch/torch.h>

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
