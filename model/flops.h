// Model FLOPs per token and device peaks, for MFU (model FLOPs utilisation). The formula is
// stated in docs/perf.md.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

#include "config/config.h"

namespace tessera {

// Training FLOPs per token: 6 * (matmul parameters) + 12 * n_layers * dim * seq_len
// (forward + backward of QK^T and AV, counted without the causal half, as PaLM's appendix does).
double TrainingFlopsPerToken(const ModelConfig& model, int64_t seq_len);

// Dense peak of one device at `dtype` in TFLOP/s: a lookup for known GPUs (0 if unknown), a
// ~0.3 s matmul probe on CPU with the current thread count.
double PeakTflops(torch::Device device, torch::ScalarType dtype);

}  // namespace tessera
