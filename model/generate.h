// Autoregressive generation with the key/value cache: the prompt runs once (prefill), then one
// token at a time (decode), each chosen by SampleToken with a generator seeded by the caller.
// Stops at the end-of-document token or after max_new_tokens. Times prefill and decode apart.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/sampling.h"

namespace tessera {

class TransformerImpl;

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
  std::optional<int64_t> eod;  // stop when this token is generated (it is kept in `tokens`)
  // Ids at or above this are never chosen (rows that pad the vocabulary past the tokenizer's
  // ids are no text); 0: every id of the model.
  int64_t token_limit = 0;
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // the new tokens, the end-of-document token included if reached
  bool reached_eod = false;
  double prefill_seconds = 0;  // the prompt's forward pass and the first choice
  double decode_seconds = 0;   // every later token
  // The smallest top-1 minus top-2 logit over the choices made (how close greedy came to a tie).
  double min_margin = 0;
};

// Generates from `prompt` (ids in [0, vocab_size), at least one) on the model's device.
// `on_token` (may be empty) sees each new token as it is chosen. Errors: an empty prompt, an id
// outside the vocabulary, invalid options, a model the cache cannot run (KvCache::Create).
absl::StatusOr<GenerateResult> Generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int64_t)>& on_token = {});

}  // namespace tessera
