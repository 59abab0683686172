// config.json parsing and writing for LlamaForCausalLM (hf_config.h).
#include "interop/hf_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/json.h"
#include "core/json_text.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

absl::StatusOr<int64_t> Int(const JsonValue& root, const char* key, const std::string& source, bool required,
                            int64_t fallback = 0) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(source, ": missing \"", key, "\""));
    return fallback;
  }
  if (v->type != JsonValue::Type::kNumber || std::floor(v->number) != v->number || v->number < 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not a non-negative integer"));
  }
  return static_cast<int64_t>(v->number);
}

absl::StatusOr<double> Number(const JsonValue& root, const char* key, const std::string& source,
                              double fallback) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) return fallback;
  if (v->type != JsonValue::Type::kNumber) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not a number"));
  }
  return v->number;
}

// A token id or list of ids as JSON text; "" when absent or null.
absl::StatusOr<std::string> TokenIds(const JsonValue& root, const char* key, const std::string& source) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) return std::string();
  auto id = [&](const JsonValue& x) -> absl::StatusOr<std::string> {
    if (x.type != JsonValue::Type::kNumber || std::floor(x.number) != x.number) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" holds a non-integer"));
    }
    return absl::StrCat(static_cast<int64_t>(x.number));
  };
  if (v->type != JsonValue::Type::kArray) return id(*v);
  std::vector<std::string> ids;
  for (const JsonValue& x : v->array) {
    TS_ASSIGN_OR_RETURN(std::string s, id(x));
    ids.push_back(s);
  }
  return absl::StrCat("[", absl::StrJoin(ids, ", "), "]");
}

bool IsTrue(const JsonValue* v) { return v && v->type == JsonValue::Type::kBool && v->boolean; }

}  // namespace

absl::StatusOr<HfModelInfo> ParseHfLlamaConfig(const std::string& json, const std::string& source) {
  auto parsed = ParseJson(json);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", parsed.status().message()));
  const JsonValue& root = *parsed;
  if (root.type != JsonValue::Type::kObject)
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  const JsonValue* type = root.Find("model_type");
  if (!type || type->type != JsonValue::Type::kString || type->string != "llama") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": model_type is ",
                     type && type->type == JsonValue::Type::kString ? absl::StrCat("'", type->string, "'")
                                                                    : std::string("missing"),
                     "; only Llama models (model_type \"llama\") can be imported"));
  }
  HfModelInfo info;
  ModelConfig& m = info.model;
  TS_ASSIGN_OR_RETURN(m.dim, Int(root, "hidden_size", source, true));
  TS_ASSIGN_OR_RETURN(m.ffn_dim, Int(root, "intermediate_size", source, true));
  TS_ASSIGN_OR_RETURN(m.n_layers, Int(root, "num_hidden_layers", source, true));
  TS_ASSIGN_OR_RETURN(m.n_heads, Int(root, "num_attention_heads", source, true));
  TS_ASSIGN_OR_RETURN(m.n_kv_heads, Int(root, "num_key_value_heads", source, false, m.n_heads));
  TS_ASSIGN_OR_RETURN(m.vocab_size, Int(root, "vocab_size", source, true));
  TS_ASSIGN_OR_RETURN(m.norm_eps, Number(root, "rms_norm_eps", source, 1e-6));
  TS_ASSIGN_OR_RETURN(m.init_std, Number(root, "initializer_range", source, 0.02));
  TS_ASSIGN_OR_RETURN(info.max_position_embeddings,
                      Int(root, "max_position_embeddings", source, false, 2048));
  // LlamaConfig's default is untied.
  m.tie_embeddings = IsTrue(root.Find("tie_word_embeddings"));
  if (m.n_heads == 0 || m.n_kv_heads == 0 || m.dim % m.n_heads != 0 || m.n_heads % m.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": hidden_size ", m.dim, ", num_attention_heads ", m.n_heads, ", num_key_value_heads ",
        m.n_kv_heads, ": heads must divide hidden_size and kv heads must divide heads"));
  }
  TS_ASSIGN_OR_RETURN(const int64_t head_dim, Int(root, "head_dim", source, false, m.dim / m.n_heads));
  if (head_dim != m.dim / m.n_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": head_dim ", head_dim, " differs from hidden_size / ",
        "num_attention_heads = ", m.dim / m.n_heads, "; Tessera's model derives the head size from them"));
  }
  if (IsTrue(root.Find("attention_bias")) || IsTrue(root.Find("mlp_bias"))) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": attention_bias / mlp_bias are set; Tessera's Llama has no biases"));
  }
  if (const JsonValue* act = root.Find("hidden_act");
      act && act->type == JsonValue::Type::kString && act->string != "silu") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": hidden_act '", act->string, "'; Tessera's MLP is SwiGLU (silu)"));
  }
  // Rotary: transformers 5 writes rope_parameters {rope_type, rope_theta}; 4.x rope_theta and
  // rope_scaling. Only the unscaled ("default") rotary is Tessera's.
  TS_ASSIGN_OR_RETURN(m.rope_theta, Number(root, "rope_theta", source, 10000.0));
  std::string rope_type = "default";
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const JsonValue* rope = root.Find(key);
    if (!rope || rope->type == JsonValue::Type::kNull) continue;
    if (rope->type != JsonValue::Type::kObject) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not an object"));
    }
    if (const JsonValue* t = rope->Find("rope_type"); t && t->type == JsonValue::Type::kString)
      rope_type = t->string;
    if (const JsonValue* t = rope->Find("type"); t && t->type == JsonValue::Type::kString)
      rope_type = t->string;
    TS_ASSIGN_OR_RETURN(m.rope_theta, Number(*rope, "rope_theta", source, m.rope_theta));
  }
  if (rope_type != "default") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rope type '", rope_type,
                     "' (scaled rotary embeddings) is not supported; Tessera's rotary "
                     "(kernels/rotary.h) is the unscaled one"));
  }
  TS_ASSIGN_OR_RETURN(info.bos_token_id, TokenIds(root, "bos_token_id", source));
  TS_ASSIGN_OR_RETURN(info.eos_token_id, TokenIds(root, "eos_token_id", source));
  return info;
}

std::string HfLlamaConfigJson(const HfModelInfo& info, const std::string& torch_dtype) {
  const ModelConfig& m = info.model;
  std::vector<std::string> lines = {
      "\"architectures\": [\"LlamaForCausalLM\"]",
      "\"model_type\": \"llama\"",
      absl::StrCat("\"hidden_size\": ", m.dim),
      absl::StrCat("\"intermediate_size\": ", m.ffn_dim),
      absl::StrCat("\"num_hidden_layers\": ", m.n_layers),
      absl::StrCat("\"num_attention_heads\": ", m.n_heads),
      absl::StrCat("\"num_key_value_heads\": ", m.n_kv_heads),
      absl::StrCat("\"head_dim\": ", m.head_dim()),
      absl::StrCat("\"vocab_size\": ", m.vocab_size),
      absl::StrCat("\"rms_norm_eps\": ", JsonNumber(m.norm_eps)),
      absl::StrCat("\"rope_theta\": ", JsonNumber(m.rope_theta)),
      absl::StrCat("\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": ",
                   JsonNumber(m.rope_theta), "}"),
      "\"rope_scaling\": null",
      absl::StrCat("\"max_position_embeddings\": ", info.max_position_embeddings),
      absl::StrCat("\"tie_word_embeddings\": ", m.tie_embeddings ? "true" : "false"),
      "\"hidden_act\": \"silu\"",
      "\"attention_bias\": false",
      "\"mlp_bias\": false",
      "\"attention_dropout\": 0.0",
      absl::StrCat("\"initializer_range\": ", JsonNumber(m.init_std)),
      absl::StrCat("\"torch_dtype\": ", JsonQuote(torch_dtype)),
      absl::StrCat("\"dtype\": ", JsonQuote(torch_dtype)),
  };
  if (!info.bos_token_id.empty()) lines.push_back(absl::StrCat("\"bos_token_id\": ", info.bos_token_id));
  if (!info.eos_token_id.empty()) lines.push_back(absl::StrCat("\"eos_token_id\": ", info.eos_token_id));
  return absl::StrCat("{\n  ", absl::StrJoin(lines, ",\n  "), "\n}\n");
}

}  // namespace tessera::checkpoint
