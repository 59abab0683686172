// `tessera preprocess`: text or JSON-lines corpora -> Megatron .bin/.idx shards (data/preprocess.h
// does the work; this file turns the command line into its options).
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/token_io.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "data/preprocess.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "preprocess";

// The inputs: the positional arguments, then one per line of --files-from LIST (like tar -T: long
// lists, no shell limits).
absl::StatusOr<std::vector<std::string>> Inputs(const Args& args) {
  std::vector<std::string> inputs = args.positional();
  if (args.Has("files-from")) {
    TS_ASSIGN_OR_RETURN(std::string list, ReadFileToString(args.Get("files-from")));
    for (absl::string_view line : absl::StrSplit(list, '\n', absl::SkipWhitespace())) {
      inputs.emplace_back(line);
    }
  }
  return inputs;
}

// Everything but the inputs and the output prefix.
absl::Status SetOptions(const Args& args, data::PreprocessOptions& options) {
  TS_ASSIGN_OR_RETURN(options.format, data::ParseInputFormat(args.Get("format", "auto")));
  options.json_key = args.Get("json-key", "text");
  options.path_header = args.Has("path-header");
  options.allow_special = args.Has("allow-special");
  TS_ASSIGN_OR_RETURN(int64_t workers, args.GetInt("workers", 0, {.min = 0, .max = 1024}));
  TS_ASSIGN_OR_RETURN(double shard_mb, args.GetDouble("max-shard-mb", 0, 0));
  TS_ASSIGN_OR_RETURN(double chunk_mb, args.GetDouble("chunk-mb", 4, 0.001));
  options.workers = static_cast<int>(workers);
  options.max_shard_bytes = static_cast<int64_t>(shard_mb * 1048576.0);
  options.chunk_bytes = static_cast<int64_t>(chunk_mb * 1048576.0);
  TS_ASSIGN_OR_RETURN(std::string on_error, args.GetChoice("on-error", "skip", {"skip", "fail"}));
  options.fail_on_bad_document = on_error == "fail";
  options.progress = args.Has("progress") || (!args.Has("no-progress") && ::isatty(2));
  return absl::OkStatus();
}

int RunPreprocess(const Args& args) {
  data::PreprocessOptions options;
  auto inputs = Inputs(args);
  if (!inputs.ok()) return ReportError(kName, inputs.status(), kExitUsage);
  options.inputs = *std::move(inputs);
  if (!args.Has("output-prefix") || options.inputs.empty()) {
    return ReportUsageError(kName, absl::InvalidArgumentError("--output-prefix and an INPUT are required"));
  }
  options.output_prefix = args.Get("output-prefix");
  if (absl::Status s = SetOptions(args, options); !s.ok()) return ReportError(kName, s, kExitUsage);
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kName, tokenizer.status(), kExitUsage);
  auto summary = data::Preprocess(**tokenizer, options);
  if (!summary.ok()) return ReportError(kName, summary.status(), kExitRuntimeError);
  std::fputs(summary->ToString().c_str(), stderr);
  return kExitOk;
}

}  // namespace

Command PreprocessCommand() {
  return {.name = kName,
          .usage =
              "preprocess --tokenizer T --output-prefix PREFIX [--format auto|jsonl|text] [--json-key text] "
              "[--path-header] [--workers N] [--max-shard-mb M] [--on-error skip|fail] [--files-from LIST] "
              "INPUT...",
          .summary = "corpora -> Megatron .bin/.idx shards",
          .details = kTokenizerNote,
          .args = {.flags = TokenizerFlags(
                       {Flag::Value("output-prefix"), Flag::Value("format"), Flag::Value("json-key"),
                        Flag::Bool("path-header"), Flag::Value("workers"), Flag::Value("max-shard-mb"),
                        Flag::Value("on-error"), Flag::Bool("progress"), Flag::Bool("no-progress"),
                        Flag::Bool("allow-special"), Flag::Value("chunk-mb"), Flag::Value("files-from")})},
          .run = RunPreprocess};
}

}  // namespace tessera::cli
