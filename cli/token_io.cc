// The tokenizer flags and the text forms of token ids (token_io.h).
#include "cli/token_io.h"

#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/exit_codes.h"

namespace tessera::cli {

const char kTokenizerNote[] =
    "T: cl100k_base:FILE, o200k_base:FILE, llama3:FILE or a rank file (see docs/data.md)";

std::vector<Flag> TokenizerFlags(std::vector<Flag> more) {
  more.insert(more.begin(), {Flag::Value("tokenizer"), Flag::Value("vocab")});
  return more;
}

absl::StatusOr<std::unique_ptr<data::BpeTokenizer>> TokenizerFromArgs(const Args& args) {
  if (!args.Has("tokenizer")) {
    return absl::InvalidArgumentError(
        "--tokenizer is required (cl100k_base:FILE, o200k_base:FILE, llama3:FILE or a rank file)");
  }
  if (args.Has("vocab")) return data::LoadTokenizer(args.Get("tokenizer"), args.Get("vocab"));
  return data::LoadTokenizer(args.Get("tokenizer"));
}

std::string ReadAllStdin() {
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) data.append(buffer, n);
  return data;
}

void WriteToStdout(std::string_view text) { std::fwrite(text.data(), 1, text.size(), stdout); }

int FlushStdout() { return std::fflush(stdout) == 0 ? kExitOk : kExitRuntimeError; }

void AppendIds(const std::vector<int32_t>& ids, std::string* out) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out->push_back(' ');
    absl::StrAppend(out, ids[i]);
  }
  out->push_back('\n');
}

}  // namespace tessera::cli
