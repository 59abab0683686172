// Choosing the next token from a model's logits: greedy (temperature 0), or a draw from the
// softmax at a temperature, restricted first to the k most likely tokens (top-k) and then to the
// smallest set of most likely tokens whose probability reaches p (top-p, nucleus sampling), in
// the order transformers applies them. Draws take an explicit generator, never the global one,
// so generating during training leaves the training's random streams untouched.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tessera {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: no top-k filter
  double top_p = 1.0;        // 1: no top-p filter
};

// Temperature >= 0 and finite, top_k >= 0, top_p in (0, 1]; the error names the flag.
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// The distribution a draw samples from, for logits [vocab] (any float type): softmax(logits /
// temperature) in fp64, zero outside the top-k and top-p sets, renormalised. Requires
// temperature > 0. Ties at the top-k boundary keep the lower ids (LibTorch's topk order).
torch::Tensor FilteredProbabilities(const torch::Tensor& logits, const SamplingOptions& options);

// The next token for logits [vocab]: the first largest logit when temperature is 0, else a draw
// from FilteredProbabilities with `generator` (a CPU generator).
int64_t SampleToken(const torch::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

// The largest logit minus the second largest: how close a greedy choice was to a tie.
double GreedyMargin(const torch::Tensor& logits);

}  // namespace tessera
