// Hugging Face's config.json for LlamaForCausalLM <-> Tessera's ModelConfig. Written with both
// spellings transformers has used (rope_theta and rope_parameters, rope_scaling beside
// rope_parameters; torch_dtype and dtype) so that transformers 4.x and 5.x read it. The rope types
// default, linear and llama3 (Llama 3.1 to 3.3) and a head_dim other than hidden_size /
// num_attention_heads map onto model.rope_scaling and model.head_dim. Reading refuses what
// Tessera's model cannot represent (biases, other rope types, partial rotary, another activation)
// rather than importing a model whose outputs would differ.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "config/config.h"

namespace tessera::checkpoint {

struct HfModelInfo {
  ModelConfig model;
  int64_t max_position_embeddings = 0;
  // Token ids as JSON text ("128000", "[128001, 128009]"); empty when unknown.
  std::string bos_token_id;
  std::string eos_token_id;
};

// Parses config.json text; `source` names it in messages.
absl::StatusOr<HfModelInfo> ParseHfLlamaConfig(const std::string& json, const std::string& source);
// config.json text for `info`, with `torch_dtype` ("float32", "bfloat16", "float16") naming the
// weights' dtype.
std::string HfLlamaConfigJson(const HfModelInfo& info, const std::string& torch_dtype);

}  // namespace tessera::checkpoint
