// config.json parsing and writing for LlamaForCausalLM (hf_config.h).
#include "interop/hf_config.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checked_math.h"
#include "core/json.h"
#include "core/json_text.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

// Every size of config.json must lie in [1, kMaxSize]: int32's range, as Hugging Face's own
// checkpoints have it, so that the product of any two sizes fits in int64. Products of more
// (the weights' bytes) are checked in CheckWeightBytes.
constexpr int64_t kMaxSize = INT32_MAX;

// A number as config.json spelled it, near enough: the shortest text that reads back the same
// ("-32", "40.5", "1e+300"), for messages.
std::string NumberText(double v) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, end);
}

// A size of config.json: a positive integer within kMaxSize. `fallback` when the key is absent
// or null and not `required`.
absl::StatusOr<int64_t> Int(const JsonValue& root, const char* key, const std::string& source, bool required,
                            int64_t fallback = 0) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(source, ": missing \"", key, "\""));
    return fallback;
  }
  const std::string expected = absl::StrCat("expected an integer in [1, ", kMaxSize, "]");
  if (v->type != JsonValue::Type::kNumber) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not a number; ", expected));
  }
  // The range test comes first: casting a double beyond int64's range is undefined.
  if (!(v->number >= 1 && v->number <= static_cast<double>(kMaxSize)) || std::floor(v->number) != v->number) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": \"", key, "\" is ", NumberText(v->number), "; ", expected));
  }
  return static_cast<int64_t>(v->number);
}

// A real-valued parameter; `positive` refuses zero as well as negative values (the values are
// finite: the JSON reader refuses numbers beyond a double's range).
absl::StatusOr<double> Number(const JsonValue& root, const char* key, const std::string& source,
                              double fallback, bool positive) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) return fallback;
  if (v->type != JsonValue::Type::kNumber) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not a number"));
  }
  if (positive ? !(v->number > 0) : !(v->number >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is ", NumberText(v->number),
                                                   "; expected a ", positive ? "positive" : "non-negative",
                                                   " number"));
  }
  return v->number;
}

// The bytes of the model's fp32 weights must fit in int64: sizes that are each plausible can
// still have products that wrap around, and the weights are allocated (and their slices
// computed) from those products. The terms are those of the Llama architecture's matrices.
absl::Status CheckWeightBytes(const ModelConfig& m, const std::string& source) {
  const int64_t head_dim = m.dim / m.n_heads;
  struct Term {
    const char* what;
    std::vector<int64_t> factors;
  };
  const Term terms[] = {
      {"vocab_size x hidden_size (the embeddings)", {m.vocab_size, m.dim, m.tie_embeddings ? 1 : 2}},
      {"num_hidden_layers x hidden_size x (num_attention_heads + num_key_value_heads) x head_dim (attention)",
       {m.n_layers, m.dim, m.n_heads + m.n_kv_heads, head_dim, 2}},
      {"num_hidden_layers x hidden_size x intermediate_size (the MLP)", {m.n_layers, m.dim, m.ffn_dim, 3}},
  };
  int64_t total = 0;
  for (const Term& term : terms) {
    const std::optional<int64_t> elements = CheckedNumElements(term.factors);
    const std::optional<int64_t> bytes = elements ? CheckedByteSize(*elements, sizeof(float)) : std::nullopt;
    const std::optional<int64_t> sum = bytes ? CheckedAdd(total, *bytes) : std::nullopt;
    if (!sum) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": the sizes give a model whose weights need more than 2^63 bytes (",
                       term.what, " = ", absl::StrJoin(term.factors, " x "), "): not a real model"));
    }
    total = *sum;
  }
  return absl::OkStatus();
}

// A token id or list of ids as JSON text; "" when absent or null.
absl::StatusOr<std::string> TokenIds(const JsonValue& root, const char* key, const std::string& source) {
  const JsonValue* v = root.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) return std::string();
  auto id = [&](const JsonValue& x) -> absl::StatusOr<std::string> {
    // Token ids index the vocabulary, whose size is an int32.
    if (x.type != JsonValue::Type::kNumber || std::floor(x.number) != x.number || x.number < INT32_MIN ||
        x.number > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": \"", key, "\" holds something other than an int32 token id"));
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
  TS_ASSIGN_OR_RETURN(m.norm_eps, Number(root, "rms_norm_eps", source, 1e-6, true));
  TS_ASSIGN_OR_RETURN(m.init_std, Number(root, "initializer_range", source, 0.02, false));
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
  TS_RETURN_IF_ERROR(CheckWeightBytes(m, source));
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
  TS_ASSIGN_OR_RETURN(m.rope_theta, Number(root, "rope_theta", source, 10000.0, true));
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
    TS_ASSIGN_OR_RETURN(m.rope_theta, Number(*rope, "rope_theta", source, m.rope_theta, true));
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
