// `tessera tokenize` (UTF-8 text on stdin -> a line of ids per line, record or the whole input)
// and `tessera detokenize` (lines of ids on stdin -> text): the tokenizer of data/ at the shell.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/token_io.h"
#include "core/absl_string_view.h"
#include "core/exit_codes.h"

namespace tessera::cli {
namespace {

constexpr char kTokenize[] = "tokenize";
constexpr char kDetokenize[] = "detokenize";

// Splits stdin into the texts a command works on: lines (without their '\n'), NUL-separated
// records, or the whole input.
std::vector<std::string_view> SplitInput(std::string_view data, bool whole, bool null_separated) {
  std::vector<std::string_view> texts;
  if (whole) {
    texts.push_back(data);
    return texts;
  }
  const char sep = null_separated ? '\0' : '\n';
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = data.find(sep, pos);
    if (end == std::string_view::npos) end = data.size();
    texts.push_back(data.substr(pos, end - pos));
    pos = end + 1;
  }
  return texts;
}

int Tokenize(const Args& args) {
  if (!args.positional().empty()) {
    return ReportUsageError(kTokenize, absl::InvalidArgumentError(
                                           "tokenize reads its text from stdin; it takes no file arguments"));
  }
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kTokenize, tokenizer.status(), kExitUsage);
  const std::string data = ReadAllStdin();
  std::string out;
  std::vector<int32_t> ids;
  size_t line = 0;
  for (std::string_view text : SplitInput(data, args.Has("whole"), args.Has("null"))) {
    ++line;
    ids.clear();
    absl::Status s = args.Has("allow-special") ? (*tokenizer)->EncodeWithSpecials(text, &ids)
                                               : (*tokenizer)->EncodeOrdinary(text, &ids);
    if (!s.ok()) {
      return ReportError(kTokenize,
                         absl::InvalidArgumentError(absl::StrCat(
                             "stdin ", args.Has("null") ? "record " : "line ", line, ": ", s.message())),
                         kExitRuntimeError);
    }
    AppendIds(ids, &out);
    if (out.size() > (1 << 20)) {
      WriteToStdout(out);
      out.clear();
    }
  }
  WriteToStdout(out);
  return FlushStdout();
}

int Detokenize(const Args& args) {
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kDetokenize, tokenizer.status(), kExitUsage);
  const std::string data = ReadAllStdin();
  std::string out;
  size_t line = 0;
  for (std::string_view text : SplitInput(data, false, false)) {
    ++line;
    std::vector<int32_t> ids;
    for (absl::string_view field : absl::StrSplit(AbslView(text), ' ', absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(field, &id)) {
        return ReportError(
            kDetokenize,
            absl::InvalidArgumentError(absl::StrCat("stdin line ", line, ": '", field, "' is not an id")),
            kExitRuntimeError);
      }
      ids.push_back(id);
    }
    auto decoded = (*tokenizer)->Decode(ids);
    if (!decoded.ok()) {
      return ReportError(
          kDetokenize,
          absl::InvalidArgumentError(absl::StrCat("stdin line ", line, ": ", decoded.status().message())),
          kExitRuntimeError);
    }
    out += *decoded;
    out.push_back(args.Has("null") ? '\0' : '\n');
  }
  WriteToStdout(out);
  return FlushStdout();
}

}  // namespace

Command TokenizeCommand() {
  return {.name = kTokenize,
          .usage = "tokenize --tokenizer T [--whole|--null] [--allow-special]",
          .summary =
              "UTF-8 text on stdin -> ids (a line of ids per line)\n(T: cl100k_base:FILE, o200k_base:FILE, "
              "llama3:FILE\nor a rank file; see docs/data.md)",
          .details = kTokenizerNote,
          .args = {.flags = TokenizerFlags(
                       {Flag::Bool("whole"), Flag::Bool("null"), Flag::Bool("allow-special")})},
          .run = Tokenize};
}

Command DetokenizeCommand() {
  return {.name = kDetokenize,
          .usage = "detokenize --tokenizer T [--null]",
          .summary = "lines of ids on stdin -> text",
          .details = kTokenizerNote,
          .args = {.flags = TokenizerFlags({Flag::Bool("null")})},
          .run = Detokenize};
}

}  // namespace tessera::cli
