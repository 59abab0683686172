// What an encoding is apart from its ranks: the split pattern that cuts text into pieces and the
// special tokens, and the encodings Tessera knows by name (cl100k_base, o200k_base, Llama 3).
// Ranks come from a rank file (tiktoken_files.h); the tokenizer (bpe_tokenizer.h) joins the two.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::data {

// Everything about an encoding except its rank file: the split pattern and the special tokens.
struct TokenizerSpec {
  std::string name;
  // Split pattern in PCRE2/tiktoken syntax. `\s` and `\S` are rewritten to Unicode White_Space
  // before compiling (see split_pattern.cc for why).
  std::string pattern;
  std::vector<std::pair<std::string, int32_t>> specials;
  // The special token that ends a document (preprocess appends it); empty when none is known.
  std::string eod;
  // The special token that begins a text, if the encoding has one (Llama 3); empty otherwise.
  std::string bos;
  // Number of ranks the named encoding's file has (0 = any); a mismatch is reported.
  int64_t expected_ranks = 0;
};

// The split pattern of cl100k_base, which Llama 3 uses too.
extern const char kCl100kPattern[];
// The split pattern of o200k_base.
extern const char kO200kPattern[];

// Specs of the encodings Tessera knows by name: "cl100k_base", "o200k_base", "llama3".
absl::StatusOr<TokenizerSpec> NamedTokenizerSpec(std::string_view name);
// Names accepted by NamedTokenizerSpec, for messages.
std::vector<std::string> KnownTokenizerNames();
bool IsKnownTokenizerName(std::string_view name);

}  // namespace tessera::data
