// The generation loop over KvCache; the device is synchronised only where a token id is read
// (every step: the next input depends on it).
#include "model/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace tessera {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int64_t)>& on_token) {
  TS_RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max new tokens must be >= 0, got ", options.max_new_tokens));
  }
  const int64_t vocab = model.config().vocab_size;
  for (int64_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", id, " is outside the model's vocabulary [0, ", vocab, ")"));
    }
  }
  GenerateResult result;
  result.min_margin = std::numeric_limits<double>::infinity();
  if (options.max_new_tokens == 0) return result;
  // The KV-cache path reads the weights without the forward's per-unit waits: they must be whole.
  TS_CHECK(model.ParametersWhole())
      << "generation started while the model's weights are still being gathered";
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  TS_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache, KvCache::Create(model, capacity));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const torch::Device device = model.tok_embeddings.device();

  auto start = std::chrono::steady_clock::now();
  torch::Tensor input = torch::tensor(prompt, torch::kInt64).view({1, -1}).to(device);
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    torch::Tensor logits = cache->Append(input, /*last_only=*/true).reshape({-1}).to(torch::kCPU);
    if (options.token_limit > 0 && options.token_limit < vocab) {
      logits.narrow(0, options.token_limit, vocab - options.token_limit)
          .fill_(-std::numeric_limits<float>::infinity());
    }
    const int64_t next = SampleToken(logits, options.sampling, generator);
    result.min_margin = std::min(result.min_margin, GreedyMargin(logits));
    if (i == 0) {
      result.prefill_seconds = SecondsSince(start);
      start = std::chrono::steady_clock::now();
    }
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (options.eod.has_value() && next == *options.eod) {
      result.reached_eod = true;
      break;
    }
    input = torch::full({1, 1}, next, torch::TensorOptions().dtype(torch::kInt64).device(device));
  }
  result.decode_seconds = SecondsSince(start);
  return result;
}

}  // namespace tessera
