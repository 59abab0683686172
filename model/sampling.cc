// Sampling filters over fp64 probabilities on the CPU (one row of logits per token: the cost is
// nothing next to the forward pass, and the arithmetic is the same on every device).
#include "model/sampling.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status ValidateSamplingOptions(const SamplingOptions& options) {
  if (!(options.temperature >= 0.0) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--temperature must be a finite number >= 0 (0: greedy), got ", options.temperature));
  }
  if (options.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--top-k must be >= 0 (0: off), got ", options.top_k));
  }
  if (!(options.top_p > 0.0 && options.top_p <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top-p must be in (0, 1] (1: off), got ", options.top_p));
  }
  return absl::OkStatus();
}

torch::Tensor FilteredProbabilities(const torch::Tensor& logits, const SamplingOptions& options) {
  TORCH_CHECK(options.temperature > 0.0, "FilteredProbabilities needs a temperature > 0");
  const torch::Tensor scaled =
      logits.detach().to(torch::kCPU, torch::kDouble).reshape({-1}) / options.temperature;
  torch::Tensor probs = torch::softmax(scaled, 0);
  const int64_t vocab = probs.size(0);
  // Sorted by probability, most likely first; a stable sort so that equal values keep id order.
  auto [sorted, order] = probs.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true);
  torch::Tensor keep = torch::ones({vocab}, torch::kBool);
  if (options.top_k > 0 && options.top_k < vocab)
    keep.narrow(0, options.top_k, vocab - options.top_k).fill_(false);
  if (options.top_p < 1.0) {
    // Within what top-k kept, renormalised (as transformers' filters run in turn): token i stays
    // while the mass of the tokens before it is below p, so the kept set is the smallest whose
    // mass reaches p.
    const torch::Tensor kept = sorted * keep;
    const torch::Tensor before = (kept.cumsum(0) - kept) / kept.sum();
    keep &= before < options.top_p;
  }
  torch::Tensor filtered = torch::zeros_like(probs);
  filtered.index_put_({order}, sorted * keep);
  return filtered / filtered.sum();
}

int64_t SampleToken(const torch::Tensor& logits, const SamplingOptions& options, at::Generator& generator) {
  if (options.temperature == 0.0) return logits.reshape({-1}).argmax().item<int64_t>();
  const torch::Tensor probs = FilteredProbabilities(logits, options);
  return torch::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

double GreedyMargin(const torch::Tensor& logits) {
  const torch::Tensor flat = logits.detach().reshape({-1}).to(torch::kDouble);
  if (flat.size(0) < 2) return std::numeric_limits<double>::infinity();
  const torch::Tensor top = std::get<0>(flat.topk(2));
  return (top[0] - top[1]).item<double>();
}

}  // namespace tessera
