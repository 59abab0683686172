// A token corpus held in memory as one stream: every document's tokens followed by the
// end-of-document id. Built from text files (one file = one document) or read from a raw
// little-endian uint16 token file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::data {

struct TokenCorpus {
  std::vector<int32_t> tokens;
  int64_t documents = 0;
  int64_t bytes = 0;  // source bytes read
};

// Tokenizes the files matched by `patterns` (sorted, see core/glob.h) with the byte tokenizer.
absl::StatusOr<TokenCorpus> LoadTextCorpus(const std::vector<std::string>& patterns);
// Reads a raw uint16 token file; its length must be even and it must hold at least 2 tokens.
absl::StatusOr<TokenCorpus> LoadTokenFile(const std::string& path);

}  // namespace tessera::data
