// Times the residual add + RMSNorm of a transformer block on the CPU, forward and backward (both
// outputs carrying a gradient, as in the block), three ways, alternating rep by rep in one process:
//   aten      h + delta, then ATen's rms_norm (fused forward; its backward is autograd's composite)
//   composed  h + delta, then kernels::RmsNorm (Tessera's loops for the norm alone: the block
//             before the fusion)
//   fused     kernels::AddRmsNorm (the block now)
// Usage: add_rms_norm_bench [tokens=4096] [dim=2048] [reps=20] [fp32|bf16 (delta and output)]
// Output: one `bench ...` line, then `side=... median_ms=... min_ms=...` per side.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/add_rms_norm.h"
#include "kernels/rms_norm.h"

namespace {

using tessera::kernels::AddRmsNormOutput;
using Side =
    std::function<AddRmsNormOutput(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>;

// Milliseconds of one forward + backward of `side` on fresh leaves.
double TimeOnce(const Side& side, const torch::Tensor& h0, const torch::Tensor& d0, const torch::Tensor& w0,
                const torch::Tensor& gs, const torch::Tensor& gy) {
  torch::Tensor h = h0.clone().requires_grad_();
  torch::Tensor d = d0.clone().requires_grad_();
  torch::Tensor w = w0.clone().requires_grad_();
  const auto start = std::chrono::steady_clock::now();
  const AddRmsNormOutput out = side(h, d, w);
  torch::autograd::backward({out.sum, out.normed}, {gs, gy});
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t tokens = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int64_t dim = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 20;
  const std::string precision = argc > 4 ? argv[4] : "fp32";
  if (tokens < 1 || dim < 1 || reps < 1 || (precision != "fp32" && precision != "bf16")) {
    std::fprintf(stderr, "usage: add_rms_norm_bench [tokens>0] [dim>0] [reps>0] [fp32|bf16]\n");
    return 2;
  }
  const torch::ScalarType low = precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
  constexpr double kEps = 1e-5;
  torch::manual_seed(0);
  const torch::Tensor h = torch::randn({tokens, dim});
  const torch::Tensor d = torch::randn({tokens, dim}).to(low);
  const torch::Tensor w = torch::rand({dim}) + 0.5;
  const torch::Tensor gs = torch::randn({tokens, dim});
  const torch::Tensor gy = torch::randn({tokens, dim}).to(low);
  const std::vector<std::pair<std::string, Side>> sides = {
      {"aten",
       [&](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c) {
         torch::Tensor sum = a + b;
         return AddRmsNormOutput{sum, at::rms_norm(sum, {dim}, c, kEps).to(low)};
       }},
      {"composed",
       [&](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c) {
         torch::Tensor sum = a + b;
         return AddRmsNormOutput{sum, tessera::kernels::RmsNorm(sum, c, kEps, low)};
       }},
      {"fused", [&](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c) {
         return tessera::kernels::AddRmsNorm(a, b, c, kEps, low);
       }}};
  std::printf("bench tokens=%lld dim=%lld reps=%d precision=%s threads=%d\n", static_cast<long long>(tokens),
              static_cast<long long>(dim), reps, precision.c_str(), at::get_num_threads());
  std::vector<std::vector<double>> ms(sides.size());
  for (const auto& side : sides) TimeOnce(side.second, h, d, w, gs, gy);  // warm-up
  for (int r = 0; r < reps; ++r) {
    for (size_t s = 0; s < sides.size(); ++s) ms[s].push_back(TimeOnce(sides[s].second, h, d, w, gs, gy));
  }
  for (size_t s = 0; s < sides.size(); ++s) {
    std::sort(ms[s].begin(), ms[s].end());
    std::printf("side=%s median_ms=%.2f min_ms=%.2f\n", sides[s].first.c_str(), ms[s][ms[s].size() / 2],
                ms[s].front());
  }
  return 0;
}
