// Tests of model/kv_cache: logits of the cached forward (the prompt once, then a few tokens at
// once after a cached prefix, then one token at a time) against the training forward over the
// whole sequence, at every position, for grouped-query attention with an untied head, a tied
// head with as many kv heads as query heads, and Llama 3.1's rope scaling.
#include "model/kv_cache.h"

#include <torch/torch.h>

#include "model/model.h"
#include "tests/catch_compat.h"

using tessera::KvCache;
using tessera::ModelConfig;
using tessera::Transformer;

namespace {

ModelConfig Shape(int64_t heads, int64_t kv, bool tie) {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = 3;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.ffn_dim = 96;
  c.vocab_size = 101;
  c.tie_embeddings = tie;
  c.rope_theta = 10000.0;
  // Larger than the default 0.02 so that the logits are O(1) and attention is far from uniform:
  // a position error then shows in the logits.
  c.init_std = 0.3;
  return c;
}

// Logits of the cached forward for tokens [batch, T]: positions 0..4 as the prompt, 5..7 in one
// call, the rest one at a time.
torch::Tensor CachedLogits(Transformer& model, const torch::Tensor& tokens) {
  const int64_t seq = tokens.size(1);
  auto cache = KvCache::Create(*model, seq);
  CATCH_REQUIRE(cache.ok());
  std::vector<torch::Tensor> parts = {(*cache)->Append(tokens.narrow(1, 0, 5)),
                                      (*cache)->Append(tokens.narrow(1, 5, 3))};
  for (int64_t t = 8; t < seq; ++t) parts.push_back((*cache)->Append(tokens.narrow(1, t, 1)));
  CATCH_CHECK((*cache)->length() == seq);
  return torch::cat(parts, 1);
}

void CheckAgainstFullForward(const ModelConfig& config) {
  const int64_t seq = 20;
  Transformer model(config, seq);
  model->InitializeWeights(7);
  torch::manual_seed(3);
  const torch::Tensor tokens = torch::randint(0, config.vocab_size, {2, seq}, torch::kInt64);
  torch::NoGradGuard no_grad;
  const torch::Tensor full = model->forward(tokens);
  const torch::Tensor cached = CachedLogits(model, tokens);
  CATCH_REQUIRE(cached.sizes() == full.sizes());
  // The same fp32 function summed in another order (attention of one query row against the
  // cached keys instead of the whole causal block; products of other shapes): fp32 rounding,
  // 1.9e-5 to 3.7e-5 measured on logits up to 9 (about 4e-6 relative, ~20 ulp after 3 layers).
  // 2e-5 relative to the largest logit leaves a 5x margin for other BLAS libraries and still
  // fails on a wrong rotary position or mask (differences of 1e-2 and more, checked below).
  const double scale = full.abs().max().item<double>();
  CATCH_CHECK(scale > 0.5);
  const double diff = (cached - full).abs().max().item<double>();
  CATCH_INFO("max |cached - full| = " << diff << ", logits up to " << scale);
  CATCH_CHECK(diff <= 2e-5 * scale);

  // Not a test that cannot fail: the last token alone, at position 0 without its prefix, gives
  // other logits, so the comparison above depends on the cache and the positions.
  auto fresh = KvCache::Create(*model, 1);
  CATCH_REQUIRE(fresh.ok());
  const torch::Tensor alone = (*fresh)->Append(tokens.narrow(1, seq - 1, 1));
  CATCH_CHECK((alone[0][0] - full[0][seq - 1]).abs().max().item<double>() > 1e-2);
}

}  // namespace

CATCH_TEST_CASE("cached logits equal the full forward: grouped-query attention, untied head") {
  CheckAgainstFullForward(Shape(8, 2, false));
}

CATCH_TEST_CASE("cached logits equal the full forward: tied head, one kv head per query head") {
  CheckAgainstFullForward(Shape(4, 4, true));
}

CATCH_TEST_CASE("cached logits equal the full forward: llama3 rope scaling") {
  ModelConfig c = Shape(8, 4, true);
  c.rope_scaling = tessera::RopeScaling::kLlama3;
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 4.0;
  // Short enough that the scaled band covers some of this head size's frequencies.
  c.rope_original_max_position_embeddings = 16;
  CheckAgainstFullForward(c);
}

CATCH_TEST_CASE("the cache rejects a model split over pipeline chunks and overflowing appends") {
  ModelConfig c = Shape(4, 2, false);
  tessera::ModelShardOptions chunk;
  chunk.num_layers = 1;
  chunk.has_head = false;
  Transformer first(c, 8, chunk);
  auto cache = KvCache::Create(*first, 8);
  CATCH_CHECK(!cache.ok());
  CATCH_CHECK(std::string(cache.status().message()).find("pipeline chunk") != std::string::npos);

  Transformer whole(c, 8);
  whole->InitializeWeights(1);
  auto small = KvCache::Create(*whole, 4);
  CATCH_REQUIRE(small.ok());
  (*small)->Append(torch::zeros({1, 3}, torch::kInt64));
  CATCH_CHECK_THROWS((*small)->Append(torch::zeros({1, 2}, torch::kInt64)));
}
