// Model FLOPs per token and device peaks, for MFU (model FLOPs utilisation). The formula is
// stated in docs/perf.md.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera {

// Training FLOPs per token: 6 * (matmul parameters) + 12 * n_layers * n_heads * head_dim * seq_len
// (forward + backward of QK^T and AV, counted without the causal half, as PaLM's appendix does).
double TrainingFlopsPerToken(const ModelConfig& model, int64_t seq_len);

// One matrix product the peak probe times: [m, k] x [k, n] (the model's x W^T).
struct MatmulShape {
  int64_t m = 0, k = 0, n = 0;
  std::string what;  // "square 1024", "the model's feed-forward up", ...
};

// The peak MFU is measured against, and what set it ("measured: ..., set by <shape>",
// "data sheet ...", "train.peak_tflops").
struct PeakRate {
  double tflops = 0;
  std::string basis;
};

// The shapes the CPU probe tries: squares of 512, 1024 and 1536, and this rank's own largest
// products (fused q|k|v, feed-forward up and down, output head; tensor-parallel shards of them),
// with rows capped so that no single product exceeds ~8 GFLOP.
std::vector<MatmulShape> PeakProbeShapes(const ModelConfig& model, int64_t tokens_per_micro_batch,
                                         int64_t tp);

// Times each shape at `dtype` (the best of a few repetitions, ~0.1 s per shape) and returns the
// fastest rate and the shape that set it. MFU against the best of several shapes, the model's own
// among them, cannot read above 100% the way a single 1024^3 probe could (measured: 101%).
PeakRate MeasureCpuPeak(torch::ScalarType dtype, const std::vector<MatmulShape>& shapes);

// The data sheet's dense peak of the CUDA device named `device_name` at `dtype` (fp32 on the
// tensor cores as TF32 when `tf32`, else on the CUDA cores): H100 SXM / PCIe / NVL, H200 SXM /
// NVL, A100, L40S, B200; an unknown name gets H100 SXM's, and the basis says so.
PeakRate DataSheetPeak(const std::string& device_name, torch::ScalarType dtype, bool tf32);

// What this GPU's matrix unit reaches here and now: 8192^3 products of random `dtype` values
// (fp32 as TF32 where cuBLAS may) repeated for about `seconds`, after a warm-up, timed around a
// device synchronisation; the rate of the fastest second half. The data sheet's figure is what
// MFU is counted against (comparable across sites); this one says how much of the gap to it is
// the card itself (clocks, power, the GEMM library) and how much the training step.
PeakRate MeasureCudaMatmulPeak(torch::Device device, torch::ScalarType dtype, double seconds);

// Dense peak of one device at `dtype`: a data-sheet lookup on GPU by the device's name, MeasureCpuPeak on CPU
// (bf16 without native bf16 units is timed on the fp32 GEMM it runs on, see kernels/linear.h).
PeakRate PeakTflops(torch::Device device, torch::ScalarType dtype, const std::vector<MatmulShape>& shapes);

}  // namespace tessera
