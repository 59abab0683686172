// Tessera <-> Hugging Face Llama parameter names (hf_names.h).
#include "model/hf_names.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera::checkpoint {
namespace {

// Block-level suffixes: Tessera's name after "layers.N." -> HF's after "model.layers.N.".
constexpr std::pair<const char*, const char*> kBlock[] = {
    {"attention_norm", "input_layernorm.weight"},    {"ffn_norm", "post_attention_layernorm.weight"},
    {"attention.wq", "self_attn.q_proj.weight"},     {"attention.wk", "self_attn.k_proj.weight"},
    {"attention.wv", "self_attn.v_proj.weight"},     {"attention.wo", "self_attn.o_proj.weight"},
    {"feed_forward.w_gate", "mlp.gate_proj.weight"}, {"feed_forward.w_up", "mlp.up_proj.weight"},
    {"feed_forward.w_down", "mlp.down_proj.weight"},
};

}  // namespace

std::vector<LlamaParameter> LlamaParameters(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  std::vector<LlamaParameter> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    std::string hf = HfParameterName(name);
    out.push_back({std::move(name), std::move(hf), std::move(shape)});
  };
  add("tok_embeddings", {c.vocab_size, c.dim});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("layers.", i, ".");
    add(p + "attention_norm", {c.dim});
    add(p + "ffn_norm", {c.dim});
    add(p + "attention.wq", {c.n_heads * hd, c.dim});
    add(p + "attention.wk", {c.n_kv_heads * hd, c.dim});
    add(p + "attention.wv", {c.n_kv_heads * hd, c.dim});
    add(p + "attention.wo", {c.dim, c.n_heads * hd});
    add(p + "feed_forward.w_gate", {c.ffn_dim, c.dim});
    add(p + "feed_forward.w_up", {c.ffn_dim, c.dim});
    add(p + "feed_forward.w_down", {c.dim, c.ffn_dim});
  }
  add("norm", {c.dim});
  if (!c.tie_embeddings) add("output", {c.vocab_size, c.dim});
  return out;
}

std::string HfParameterName(const std::string& name) {
  if (name == "tok_embeddings") return "model.embed_tokens.weight";
  if (name == "norm") return "model.norm.weight";
  if (name == "output") return "lm_head.weight";
  if (name.rfind("layers.", 0) != 0) return "";
  const size_t dot = name.find('.', 7);
  int64_t layer;
  if (dot == std::string::npos || !absl::SimpleAtoi(name.substr(7, dot - 7), &layer)) return "";
  const std::string rest = name.substr(dot + 1);
  for (const auto& [ours, theirs] : kBlock) {
    if (rest == ours) return absl::StrCat("model.layers.", layer, ".", theirs);
  }
  return "";
}

}  // namespace tessera::checkpoint
