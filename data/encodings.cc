// The named encodings: their split patterns and special tokens, as tiktoken and Meta's Llama 3
// tokenizer.py define them.
#include "data/encodings.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/absl_string_view.h"

namespace tessera::data {

// The patterns as FORMATS.md and tiktoken give them (cl100k: tiktoken's original form, which
// Meta's Llama 3 tokenizer.py also uses).
const char kCl100kPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kO200kPattern[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

TokenizerSpec Llama3Spec() {
  TokenizerSpec spec;
  spec.name = "llama3";
  spec.pattern = kCl100kPattern;
  spec.expected_ranks = 128000;
  // Meta's tokenizer.py: 256 specials from id 128000; reserved names fill the gaps.
  std::vector<std::string> names = {"<|begin_of_text|>",
                                    "<|end_of_text|>",
                                    "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>",
                                    "<|reserved_special_token_2|>",
                                    "<|reserved_special_token_3|>",
                                    "<|start_header_id|>",
                                    "<|end_header_id|>",
                                    "<|reserved_special_token_4|>",
                                    "<|eot_id|>"};
  for (int i = 5; i < 256 - 5; ++i) names.push_back(absl::StrCat("<|reserved_special_token_", i, "|>"));
  for (size_t i = 0; i < names.size(); ++i)
    spec.specials.emplace_back(names[i], 128000 + static_cast<int32_t>(i));
  spec.eod = "<|end_of_text|>";
  spec.bos = "<|begin_of_text|>";
  return spec;
}

}  // namespace

std::vector<std::string> KnownTokenizerNames() { return {"cl100k_base", "o200k_base", "llama3"}; }

bool IsKnownTokenizerName(std::string_view name) {
  for (const std::string& known : KnownTokenizerNames()) {
    if (name == known) return true;
  }
  return false;
}

absl::StatusOr<TokenizerSpec> NamedTokenizerSpec(std::string_view name) {
  TokenizerSpec spec;
  spec.name = std::string(name);
  if (name == "cl100k_base") {
    spec.pattern = kCl100kPattern;
    spec.specials = {{"<|endoftext|>", 100257},
                     {"<|fim_prefix|>", 100258},
                     {"<|fim_middle|>", 100259},
                     {"<|fim_suffix|>", 100260},
                     {"<|endofprompt|>", 100276}};
    spec.eod = "<|endoftext|>";
    spec.expected_ranks = 100256;
    return spec;
  }
  if (name == "o200k_base") {
    spec.pattern = kO200kPattern;
    spec.specials = {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
    spec.eod = "<|endoftext|>";
    spec.expected_ranks = 199998;
    return spec;
  }
  if (name == "llama3") return Llama3Spec();
  return absl::NotFoundError(absl::StrCat("unknown tokenizer '", AbslView(name),
                                          "' (known: ", absl::StrJoin(KnownTokenizerNames(), ", "),
                                          ", or the path of a tiktoken-format rank file)"));
}

}  // namespace tessera::data
