// The parameters of Tessera's Llama model (trainer/model.h) with their shapes and their names in
// Hugging Face's LlamaForCausalLM. Both use [out_features, in_features] matrices and the
// half-split rotary layout (kernels/rotary.h), so weights map one to one, unpermuted:
//
//   Tessera                              Hugging Face
//   tok_embeddings                       model.embed_tokens.weight
//   layers.N.attention_norm              model.layers.N.input_layernorm.weight
//   layers.N.attention.wq / wk / wv / wo model.layers.N.self_attn.q_proj / k_proj / v_proj / o_proj.weight
//   layers.N.ffn_norm                    model.layers.N.post_attention_layernorm.weight
//   layers.N.feed_forward.w_gate / w_up / w_down
//                                        model.layers.N.mlp.gate_proj / up_proj / down_proj.weight
//   norm                                 model.norm.weight
//   output (untied only)                 lm_head.weight
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera::checkpoint {

struct LlamaParameter {
  std::string name;     // Tessera's logical name
  std::string hf_name;  // LlamaForCausalLM's state-dict name
  std::vector<int64_t> shape;
};

// Every parameter of the model of `config`: embedding, blocks, final norm, head. The same names
// and shapes as TransformerImpl::named_parameters() (a test keeps them equal), computed without
// building the model.
std::vector<LlamaParameter> LlamaParameters(const ModelConfig& config);

// The Hugging Face name of a Tessera parameter name ("" if it has none).
std::string HfParameterName(const std::string& name);

}  // namespace tessera::checkpoint
