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
  const int64_t head_dim = m.head_dim();
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

// The heads' sizes. head_dim may differ from hidden_size / num_attention_heads (Llama 3.x writes
// it equal; other models choose it apart): it is then carried as model.head_dim, else left
// derived so that the imported config reads as before. Its parity is checked once the sizes are
// known to be sane (CheckWeightBytes).
absl::Status ParseHeads(const JsonValue& root, const std::string& source, ModelConfig& m) {
  TS_ASSIGN_OR_RETURN(const int64_t head_dim, Int(root, "head_dim", source, false, 0));
  const bool derived = head_dim == 0 || (m.dim % m.n_heads == 0 && head_dim == m.dim / m.n_heads);
  if (m.n_heads % m.n_kv_heads != 0 || (derived && m.dim % m.n_heads != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": hidden_size ", m.dim, ", num_attention_heads ", m.n_heads, ", num_key_value_heads ",
        m.n_kv_heads,
        ": kv heads must divide heads, and heads must divide hidden_size unless head_dim is set"));
  }
  m.explicit_head_dim = derived ? 0 : head_dim;
  return absl::OkStatus();
}

// A parameter a rope type cannot do without.
absl::StatusOr<double> RequiredNumber(const JsonValue& rope, const char* key, const std::string& where,
                                      const std::string& type) {
  const JsonValue* v = rope.Find(key);
  if (!v || v->type == JsonValue::Type::kNull) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": rope type '", type, "' needs \"", key, "\", which is missing"));
  }
  return Number(rope, key, where, 0, true);
}

// The rotary embedding: transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; 4.x
// rope_theta and rope_scaling {rope_type (or type), ...}. As in transformers 5, rope_scaling
// wins over rope_parameters and the top-level rope_theta fills in a dictionary without one.
// Tessera's rotary takes the unscaled ("default"), "linear" and "llama3" types; any other would
// give other outputs and is refused.
absl::Status ParseRope(const JsonValue& root, const std::string& source, int64_t max_position_embeddings,
                       ModelConfig& m) {
  TS_ASSIGN_OR_RETURN(m.rope_theta, Number(root, "rope_theta", source, 10000.0, true));
  const JsonValue* rope = nullptr;
  const char* rope_key = "";
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const JsonValue* v = root.Find(key);
    if (!v || v->type == JsonValue::Type::kNull) continue;
    if (v->type != JsonValue::Type::kObject) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" is not an object"));
    }
    if (rope == nullptr && !v->object.empty()) rope = v, rope_key = key;
  }
  if (rope == nullptr) return absl::OkStatus();
  const std::string where = absl::StrCat(source, ": ", rope_key);
  std::string type = "default";
  for (const char* key : {"type", "rope_type"}) {
    if (const JsonValue* t = rope->Find(key); t && t->type == JsonValue::Type::kString) type = t->string;
  }
  TS_ASSIGN_OR_RETURN(m.rope_theta, Number(*rope, "rope_theta", where, m.rope_theta, true));
  TS_ASSIGN_OR_RETURN(const double partial, Number(*rope, "partial_rotary_factor", where, 1.0, true));
  if (partial != 1.0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"partial_rotary_factor\" is ",
                                                   NumberText(partial),
                                                   "; Tessera's rotary turns every channel of a head"));
  }
  if (type == "default") return absl::OkStatus();
  if (type != "linear" && type != "llama3") {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": rope type '", type,
        "' is not supported; Tessera's rotary (kernels/rotary.h) takes default, linear and llama3"));
  }
  TS_ASSIGN_OR_RETURN(m.rope_factor, RequiredNumber(*rope, "factor", where, type));
  if (type == "linear") {
    m.rope_scaling = RopeScaling::kLinear;
    return absl::OkStatus();
  }
  m.rope_scaling = RopeScaling::kLlama3;
  TS_ASSIGN_OR_RETURN(m.rope_low_freq_factor, RequiredNumber(*rope, "low_freq_factor", where, type));
  TS_ASSIGN_OR_RETURN(m.rope_high_freq_factor, RequiredNumber(*rope, "high_freq_factor", where, type));
  if (!(m.rope_low_freq_factor < m.rope_high_freq_factor)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"low_freq_factor\" ", NumberText(m.rope_low_freq_factor),
                     " is not below \"high_freq_factor\" ", NumberText(m.rope_high_freq_factor)));
  }
  // transformers takes a top-level original_max_position_embeddings first, then the dictionary's,
  // then max_position_embeddings.
  TS_ASSIGN_OR_RETURN(const int64_t in_rope,
                      Int(*rope, "original_max_position_embeddings", where, false, max_position_embeddings));
  TS_ASSIGN_OR_RETURN(m.rope_original_max_position_embeddings,
                      Int(root, "original_max_position_embeddings", source, false, in_rope));
  return absl::OkStatus();
}

// The rope_scaling dictionary of config.json for `m`'s scaling (without rope_theta, which
// transformers 4.x does not expect there); "null" when unscaled.
std::string RopeScalingJson(const ModelConfig& m) {
  if (m.rope_scaling == RopeScaling::kNone) return "null";
  std::vector<std::string> items = {absl::StrCat("\"rope_type\": ", JsonQuote(EnumName(m.rope_scaling))),
                                    absl::StrCat("\"factor\": ", JsonNumber(m.rope_factor))};
  if (m.rope_scaling == RopeScaling::kLlama3) {
    items.push_back(absl::StrCat("\"low_freq_factor\": ", JsonNumber(m.rope_low_freq_factor)));
    items.push_back(absl::StrCat("\"high_freq_factor\": ", JsonNumber(m.rope_high_freq_factor)));
    items.push_back(
        absl::StrCat("\"original_max_position_embeddings\": ", m.rope_original_max_position_embeddings));
  }
  return absl::StrCat("{", absl::StrJoin(items, ", "), "}");
}

// rope_parameters: transformers 5's dictionary, rope_theta included.
std::string RopeParametersJson(const ModelConfig& m) {
  const std::string theta = absl::StrCat("\"rope_theta\": ", JsonNumber(m.rope_theta));
  if (m.rope_scaling == RopeScaling::kNone) return absl::StrCat("{\"rope_type\": \"default\", ", theta, "}");
  const std::string scaling = RopeScalingJson(m);
  return absl::StrCat(scaling.substr(0, scaling.size() - 1), ", ", theta, "}");
}

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
  TS_RETURN_IF_ERROR(ParseHeads(root, source, m));
  TS_RETURN_IF_ERROR(CheckWeightBytes(m, source));
  if (m.head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": head_dim ", m.head_dim(),
                                                   " is odd; rotary embeddings rotate pairs of channels"));
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
  TS_RETURN_IF_ERROR(ParseRope(root, source, info.max_position_embeddings, m));
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
      absl::StrCat("\"rope_parameters\": ", RopeParametersJson(m)),
      absl::StrCat("\"rope_scaling\": ", RopeScalingJson(m)),
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
