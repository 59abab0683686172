// `tessera export-hf CHECKPOINT --out DIR`: a checkpoint as a Hugging Face Llama model
// (interop/hf_export.h does the work).
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "core/exit_codes.h"
#include "interop/hf_export.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "export-hf";

absl::StatusOr<checkpoint::DType> DTypeOf(const std::string& name) {
  if (name == "bf16" || name == "bfloat16") return checkpoint::DType::kBFloat16;
  if (name == "fp16" || name == "float16") return checkpoint::DType::kFloat16;
  if (name == "fp32" || name == "float32") return checkpoint::DType::kFloat32;
  return absl::InvalidArgumentError(absl::StrCat("--dtype '", name, "': expected bf16, fp32 or fp16"));
}

int Export(const Args& args) {
  checkpoint::HfExportOptions options;
  if (args.positional().empty())
    return ReportUsageError(kName, absl::InvalidArgumentError("no checkpoint given"));
  options.checkpoint = args.positional()[0];
  if (args.Has("dtype")) {
    auto dtype = DTypeOf(args.Get("dtype"));
    if (!dtype.ok()) return ReportUsageError(kName, dtype.status());
    options.dtype = *dtype;
  }
  if (args.Has("max-shard-size")) {
    auto bytes = checkpoint::ParseByteSize(args.Get("max-shard-size"));
    if (!bytes.ok()) return ReportUsageError(kName, bytes.status());
    options.max_shard_bytes = *bytes;
  }
  options.out_dir = args.Get("out");
  if (options.out_dir.empty())
    return ReportUsageError(kName, absl::InvalidArgumentError("--out DIR is required"));
  options.tokenizer = args.Get("tokenizer");
  auto written = checkpoint::ExportHf(options);
  if (!written.ok()) {
    return ReportError(kName, written.status(), InputOrRuntimeExitCode(written.status()));
  }
  return kExitOk;
}

}  // namespace

Command ExportHfCommand() {
  return {
      .name = kName,
      .usage =
          "export-hf CHECKPOINT --out DIR [--dtype bf16|fp32|fp16] [--max-shard-size 5GB] "
          "[--tokenizer FILE]",
      .summary =
          "write a Hugging Face Llama model (config.json,\nsafetensors) from a checkpoint "
          "(docs/checkpoints.md)",
      .details = "  CHECKPOINT: a step directory, or a checkpoint directory (its newest valid checkpoint)",
      .args = {.flags = {Flag::Value("out", "a directory"), Flag::Value("dtype", "bf16, fp32 or fp16"),
                         Flag::Value("max-shard-size", "a size such as 5GB"),
                         Flag::Value("tokenizer", "a file")},
               .max_positionals = 1},
      .run = Export};
}

}  // namespace tessera::cli
