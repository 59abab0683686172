// FLOP accounting and peak probes.
#include "model/flops.h"

#include <torch/torch.h>

#include <chrono>

#include "kernels/linear.h"
#include "model/model.h"

namespace tessera {

double TrainingFlopsPerToken(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * static_cast<double>(MatmulParameterCount(model)) +
         12.0 * static_cast<double>(model.n_layers * model.dim * seq_len);
}

double PeakTflops(torch::Device device, torch::ScalarType dtype) {
  if (device.is_cuda()) {
    // Dense tensor-core peaks from the vendors' data sheets (bf16 / tf32-as-fp32), TFLOP/s.
    // The device name is not available through the CPU-portable API; H100/H200 SXM are assumed
    // when unknown, and train.peak_tflops overrides.
    return dtype == torch::kBFloat16 ? 989.0 : 494.5;
  }
  // CPU: time a square matmul the way the model multiplies at this dtype (bf16 without native
  // bf16 units runs on the fp32 GEMM, see kernels/linear.h); the best of a few repetitions.
  if (dtype == torch::kBFloat16 && kernels::CpuBf16MatmulPath() == kernels::Bf16MatmulPath::kEmulated) {
    dtype = torch::kFloat;
  }
  torch::NoGradGuard no_grad;
  const int64_t n = 1024;
  auto options = torch::TensorOptions().dtype(dtype);
  torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  torch::Tensor c = torch::mm(a, b);  // warm up
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto start = std::chrono::steady_clock::now();
    c = torch::mm(a, b);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, s);
  }
  return 2.0 * n * n * n / best / 1e12;
}

}  // namespace tessera
