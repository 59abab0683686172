// What the data commands share: the flags that name a tokenizer, and reading text from stdin and
// writing token ids as text (one line of space-separated ids per document or line).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/args.h"
#include "data/bpe_tokenizer.h"

namespace tessera::cli {

// --tokenizer T (cl100k_base:FILE, o200k_base:FILE, llama3:FILE or a rank file), --vocab FILE,
// and the command's own flags `more`.
std::vector<Flag> TokenizerFlags(std::vector<Flag> more = {});
// What T may be, for the usage texts.
extern const char kTokenizerNote[];

// The tokenizer the flags name; an error when --tokenizer is missing or does not load.
absl::StatusOr<std::unique_ptr<data::BpeTokenizer>> TokenizerFromArgs(const Args& args);

std::string ReadAllStdin();
void WriteToStdout(std::string_view text);
// 0 when everything written to stdout reached it, else 1.
int FlushStdout();
// "1 2 3\n".
void AppendIds(const std::vector<int32_t>& ids, std::string* out);

}  // namespace tessera::cli
