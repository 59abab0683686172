// Loading a tokenizer from a description (bpe_tokenizer.h): a named encoding with its rank file,
// or a rank file with the metadata file beside it.
#include <filesystem>

#include "data/bpe_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/absl_string_view.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "data/encodings.h"
#include "data/tiktoken_files.h"

namespace tessera::data {

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view name_or_file,
                                                            std::string_view rank_file) {
  const std::string name(name_or_file);
  if (!rank_file.empty()) {
    if (!IsKnownTokenizerName(name) && !name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a known tokenizer name (",
                                                     absl::StrJoin(KnownTokenizerNames(), ", "),
                                                     ") to pair with the rank file ", AbslView(rank_file)));
    }
    const std::string file(rank_file);
    auto tokens = LoadTiktokenRanks(file);
    if (!tokens.ok()) return tokens.status();
    if (name.empty()) return LoadTokenizer(file, "");
    TS_ASSIGN_OR_RETURN(TokenizerSpec spec, NamedTokenizerSpec(name));
    return BpeTokenizer::Create(*std::move(tokens), std::move(spec), file);
  }
  if (IsKnownTokenizerName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer '", name,
                     "' needs its rank file, which is data you supply (Tessera ships no vocabularies): "
                     "give '",
                     name, ":PATH' (for example ",
                     name == "llama3" ? "llama3:/models/Llama-3-8B/tokenizer.model"
                                      : absl::StrCat(name, ":/data/", name, ".tiktoken"),
                     ")"));
  }
  if (name.empty()) return absl::InvalidArgumentError("no tokenizer given");
  if (!PathExists(name)) {
    return absl::NotFoundError(absl::StrCat("tokenizer '", name, "' is neither a known name (",
                                            absl::StrJoin(KnownTokenizerNames(), ", "),
                                            ", each as NAME:RANK_FILE) nor an existing rank file"));
  }
  TS_ASSIGN_OR_RETURN(std::vector<std::string> tokens, LoadTiktokenRanks(name));
  const std::string metadata = FindTokenizerMetadataFile(name);
  TokenizerSpec spec;
  if (!metadata.empty()) {
    TS_ASSIGN_OR_RETURN(spec, ReadTokenizerMetadata(metadata, static_cast<int64_t>(tokens.size())));
  } else if (tokens.size() == 128000) {
    // Meta's tokenizer.model carries no metadata; its size identifies it.
    TS_ASSIGN_OR_RETURN(spec, NamedTokenizerSpec("llama3"));
  } else {
    spec.name = std::filesystem::path(name).stem().string();
    spec.pattern = kCl100kPattern;
    spec.specials = {{"<|endoftext|>", static_cast<int32_t>(tokens.size())}};
    spec.eod = "<|endoftext|>";
  }
  return BpeTokenizer::Create(std::move(tokens), std::move(spec), name);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view description) {
  const size_t colon = description.find(':');
  if (colon != std::string_view::npos && IsKnownTokenizerName(description.substr(0, colon))) {
    return LoadTokenizer(description.substr(0, colon), description.substr(colon + 1));
  }
  return LoadTokenizer(description, "");
}

}  // namespace tessera::data
