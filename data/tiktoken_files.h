// The files a tokenizer is loaded from, in tiktoken's formats: the rank file (one
// `base64(bytes) rank` per line; Llama 3's tokenizer.model is one) and the metadata file beside
// it that gives the split pattern and the special tokens ({"pat_str", "special_tokens"}, which
// `tessera tokenizer train` writes and LoadTokenizer reads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/encodings.h"

namespace tessera::data {

// Reads a tiktoken rank file: one `base64(bytes) rank` per line. Ranks must be exactly 0..N-1
// (each once) and tokens distinct; errors name the file and the line.
absl::StatusOr<std::vector<std::string>> LoadTiktokenRanks(const std::string& path);
// Writes one atomically (temporary file + rename).
absl::Status WriteTiktokenRanks(const std::string& path, const std::vector<std::string>& tokens);

// The metadata file of `spec` for a rank file of `num_ranks` ranks.
std::string TokenizerMetadataJson(const TokenizerSpec& spec, int64_t num_ranks);
// Reads a metadata file: "pat_str" is required; "special_tokens", "name", "eod", "bos" and
// "n_ranks" (checked against `num_ranks`) are optional. Without "eod", <|endoftext|> or
// <|end_of_text|> is the end-of-document token when it is among the specials.
absl::StatusOr<TokenizerSpec> ReadTokenizerMetadata(const std::string& path, int64_t num_ranks);
// Where the metadata of `rank_file` is written: its extension replaced by .json, or PATH.json
// when it has none.
std::string TokenizerMetadataPath(const std::string& rank_file);
// The metadata file beside `rank_file` (TokenizerMetadataPath, else PATH.json), or "" if none.
std::string FindTokenizerMetadataFile(const std::string& rank_file);

}  // namespace tessera::data
