// Loading of token corpora. Errors name the file and, for token files, the byte count found.
#include "data/token_corpus.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/glob.h"
#include "core/status_macros.h"
#include "data/byte_tokenizer.h"

namespace tessera::data {

absl::StatusOr<TokenCorpus> LoadTextCorpus(const std::vector<std::string>& patterns) {
  TS_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandFilePatterns(patterns));
  TokenCorpus corpus;
  for (const std::string& file : files) {
    TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
    if (text.empty()) continue;  // an empty document contributes nothing, not even an EOD
    ByteTokenizer::Encode(text, &corpus.tokens);
    corpus.tokens.push_back(ByteTokenizer::kEndOfDocument);
    corpus.bytes += static_cast<int64_t>(text.size());
    ++corpus.documents;
  }
  if (corpus.tokens.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("the files matching '", patterns.front(), "' hold no text"));
  }
  return corpus;
}

absl::StatusOr<TokenCorpus> LoadTokenFile(const std::string& path) {
  TS_ASSIGN_OR_RETURN(std::string raw, ReadFileToString(path));
  if (raw.size() % 2 != 0 || raw.size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file '", path, "' has ", raw.size(),
                     " bytes: expected an even number of bytes (uint16 tokens), at least 4"));
  }
  TokenCorpus corpus;
  corpus.tokens.resize(raw.size() / 2);
  for (size_t i = 0; i < corpus.tokens.size(); ++i) {
    uint16_t v;
    std::memcpy(&v, raw.data() + 2 * i, 2);  // little-endian host (x86-64, aarch64)
    corpus.tokens[i] = v;
  }
  corpus.bytes = static_cast<int64_t>(raw.size());
  corpus.documents = 1;
  return corpus;
}

}  // namespace tessera::data
