// FLOP accounting and peak probes.
#include "model/flops.h"

#include <ATen/DeviceAccelerator.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "absl/strings/str_format.h"

#include "kernels/device_name.h"
#include "kernels/linear.h"
#include "model/model.h"

namespace tessera {

double TrainingFlopsPerToken(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * static_cast<double>(MatmulParameterCount(model)) +
         12.0 * static_cast<double>(model.n_layers * model.attention_dim() * seq_len);
}

std::vector<MatmulShape> PeakProbeShapes(const ModelConfig& model, int64_t tokens_per_micro_batch,
                                         int64_t tp) {
  std::vector<MatmulShape> shapes = {
      {512, 512, 512, "square 512"}, {1024, 1024, 1024, "square 1024"}, {1536, 1536, 1536, "square 1536"}};
  const int64_t shard = std::max<int64_t>(1, tp);
  const int64_t qkv = (model.n_heads + 2 * model.n_kv_heads) * model.head_dim() / shard;
  const std::vector<MatmulShape> own = {
      {tokens_per_micro_batch, model.dim, qkv, "the model's q|k|v"},
      {tokens_per_micro_batch, model.dim, 2 * model.ffn_dim / shard, "the model's feed-forward gate|up"},
      {tokens_per_micro_batch, model.ffn_dim / shard, model.dim, "the model's feed-forward down"},
      {tokens_per_micro_batch, model.dim, model.vocab_size / shard, "the model's output head"},
  };
  constexpr double kMaxFlops = 8e9;  // ~0.1 s at 80 GFLOP/s: the probe must stay short
  for (MatmulShape s : own) {
    if (s.m <= 0 || s.k <= 0 || s.n <= 0) continue;
    const double per_row = 2.0 * static_cast<double>(s.k) * static_cast<double>(s.n);
    s.m = std::max<int64_t>(1, std::min<int64_t>(s.m, static_cast<int64_t>(kMaxFlops / per_row)));
    s.what += absl::StrFormat(" %dx%dx%d", s.m, s.k, s.n);
    shapes.push_back(s);
  }
  return shapes;
}

PeakRate MeasureCpuPeak(torch::ScalarType dtype, const std::vector<MatmulShape>& shapes) {
  torch::NoGradGuard no_grad;
  PeakRate best{0, ""};
  auto options = torch::TensorOptions().dtype(dtype);
  for (const MatmulShape& s : shapes) {
    torch::Tensor x = torch::randn({s.m, s.k}, options), w = torch::randn({s.n, s.k}, options);
    torch::Tensor y = torch::mm(x, w.t());  // warm up (and let the GEMM pick its blocking)
    double fastest = 1e30, spent = 0;
    for (int rep = 0; rep < 5 && (rep < 2 || spent < 0.1); ++rep) {
      const auto start = std::chrono::steady_clock::now();
      y = torch::mm(x, w.t());
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fastest = std::min(fastest, seconds);
      spent += seconds;
    }
    const double tflops = 2.0 * s.m * s.k * s.n / fastest / 1e12;
    if (tflops > best.tflops) best = {tflops, s.what};
  }
  best.basis = absl::StrFormat("measured: best of %d product shapes in %s, set by %s", shapes.size(),
                               dtype == torch::kBFloat16 ? "bf16"
                               : dtype == torch::kFloat  ? "fp32"
                                                         : "fp64",
                               best.basis);
  return best;
}

namespace {

// Dense (no 2:4 sparsity) peaks of the vendor's data sheets, TFLOP/s: bf16 on the tensor cores,
// TF32 on the tensor cores, fp32 on the CUDA cores. Matched by the first name fragment the
// device name contains, most specific first (docs/perf.md cites the sheets).
struct DataSheetRow {
  const char* fragment;
  const char* model;
  double bf16, tf32, fp32;
};
constexpr DataSheetRow kDataSheets[] = {
    {"H100 PCIe", "H100 PCIe", 756.0, 378.0, 51.2}, {"H100 NVL", "H100 NVL", 835.5, 417.5, 60.0},
    {"H100", "H100 SXM", 989.4, 494.7, 66.9},       {"H200 NVL", "H200 NVL", 835.5, 417.5, 60.0},
    {"H200", "H200 SXM", 989.4, 494.7, 66.9},       {"A100", "A100", 312.0, 156.0, 19.5},
    {"L40S", "L40S", 362.05, 183.0, 91.6},          {"B200", "B200", 2250.0, 1100.0, 75.0},
};

}  // namespace

PeakRate DataSheetPeak(const std::string& device_name, torch::ScalarType dtype, bool tf32) {
  const DataSheetRow* row = &kDataSheets[2];  // H100 SXM when the name is unknown
  bool known = false;
  for (const DataSheetRow& r : kDataSheets) {
    if (device_name.find(r.fragment) != std::string::npos) {
      row = &r;
      known = true;
      break;
    }
  }
  const bool bf16 = dtype == torch::kBFloat16;
  const double tflops = bf16 ? row->bf16 : tf32 ? row->tf32 : row->fp32;
  const char* what = bf16 ? "dense bf16" : tf32 ? "dense TF32 (train.allow_tf32)" : "fp32 without TF32";
  const std::string device = device_name.empty() ? "an unnamed device" : "'" + device_name + "'";
  return {tflops, known
                      ? absl::StrFormat("data sheet: %s, %s (train.peak_tflops overrides)", row->model, what)
                      : absl::StrFormat("data sheet: %s, %s, assumed for %s (not in Tessera's table; "
                                        "train.peak_tflops overrides)",
                                        row->model, what, device)};
}

PeakRate MeasureCudaMatmulPeak(torch::Device device, torch::ScalarType dtype, double seconds) {
  torch::NoGradGuard no_grad;
  constexpr int64_t kN = 8192;
  constexpr double kFlops = 10 * 2.0 * kN * kN * kN;  // one batch of ten products
  std::vector<double> rates;
  {
    const auto options = torch::TensorOptions().device(device).dtype(dtype);
    const torch::Tensor a = torch::randn({kN, kN}, options), b = torch::randn({kN, kN}, options);
    torch::Tensor c = torch::mm(a, b);  // warm-up: cuBLAS handle, heuristics, clocks rising
    for (int i = 0; i < 3; ++i) torch::mm_out(c, a, b);
    torch::cuda::synchronize(device.index());
    const auto begin = std::chrono::steady_clock::now();
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() < seconds) {
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < 10; ++i) torch::mm_out(c, a, b);
      torch::cuda::synchronize(device.index());
      rates.push_back(kFlops /
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 1e12);
    }
  }
  // The probe's 400 MB must neither stay cached nor count in the run's peak memory.
  at::accelerator::emptyCache();
  at::accelerator::resetPeakStats(device.index() < 0 ? 0 : device.index());
  // The fastest batch of the second half: clocks have settled by then.
  double best = 0;
  for (size_t i = rates.size() / 2; i < rates.size(); ++i) best = std::max(best, rates[i]);
  const char* what = dtype == torch::kBFloat16               ? "bf16"
                     : at::globalContext().allowTF32CuBLAS() ? "fp32 (TF32)"
                                                             : "fp32";
  return {best, absl::StrFormat("measured here: %d batches of ten %dx%dx%d %s products in %.1f s",
                                rates.size(), kN, kN, kN, what, seconds)};
}

PeakRate PeakTflops(torch::Device device, torch::ScalarType dtype, const std::vector<MatmulShape>& shapes) {
  if (device.is_cuda()) {
    return DataSheetPeak(kernels::CudaDeviceName(device.index()), dtype,
                         at::globalContext().allowTF32CuBLAS());
  }
  if (dtype == torch::kBFloat16 && kernels::CpuBf16MatmulPath() == kernels::Bf16MatmulPath::kEmulated) {
    dtype = torch::kFloat;
  }
  return MeasureCpuPeak(dtype, shapes);
}

}  // namespace tessera
