// Tests of kernels/sum_squares: the fused fp32 CPU pass equals an fp64 reference (to fp64
// rounding of the sum), does not depend on the thread count, and takes non-contiguous input.
#include "kernels/sum_squares.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "tests/catch_compat.h"

using tessera::kernels::SumOfSquares;

CATCH_TEST_CASE("SumOfSquares equals the fp64 reference and ignores the thread count") {
  torch::manual_seed(7);
  // Sizes around the 64Ki block: empty, one element, a partial block, several blocks + a tail.
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{65536}, int64_t{3 * 65536 + 17}}) {
    auto x = torch::randn({n}) * 3;
    const double reference = x.to(torch::kDouble).square().sum().item<double>();
    auto s = SumOfSquares(x);
    CATCH_CHECK(s.scalar_type() == torch::kDouble);
    CATCH_CHECK(s.dim() == 0);
    // Each square is exact in fp64; only the order of the n additions differs from the
    // reference, so the difference is bounded by n * 2^-53 relative.
    CATCH_CHECK(std::abs(s.item<double>() - reference) <= 1e-16 * static_cast<double>(n + 1) * reference);
    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    const double one_thread = SumOfSquares(x).item<double>();
    at::set_num_threads(threads);
    CATCH_CHECK(one_thread == s.item<double>());
  }
}

CATCH_TEST_CASE("SumOfSquares takes strided fp32 views and other dtypes") {
  torch::manual_seed(8);
  auto x = torch::randn({300, 40});
  auto column = x.narrow(1, 3, 5);
  CATCH_CHECK(SumOfSquares(column).item<double>() ==
              Approx(column.to(torch::kDouble).square().sum().item<double>()).epsilon(1e-14));
  auto d = torch::randn({100}, torch::kDouble);
  CATCH_CHECK(SumOfSquares(d).item<double>() == Approx(d.square().sum().item<double>()).epsilon(1e-14));
}
