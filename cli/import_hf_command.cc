// `tessera import-hf HF_DIR --out CHECKPOINT_DIR`: a Hugging Face Llama model as a step-0
// checkpoint (interop/hf_import.h does the work).
#include "absl/status/status.h"
#include "cli/commands.h"
#include "core/exit_codes.h"
#include "core/logging.h"
#include "interop/hf_import.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "import-hf";

int Import(const Args& args) {
  checkpoint::HfImportOptions options;
  if (args.positional().empty()) {
    return ReportUsageError(kName, absl::InvalidArgumentError("no Hugging Face model directory given"));
  }
  options.hf_dir = args.positional()[0];
  options.out_dir = args.Get("out");
  if (options.out_dir.empty()) {
    return ReportUsageError(kName, absl::InvalidArgumentError("--out CHECKPOINT_DIR is required"));
  }
  options.tokenizer = args.Get("tokenizer");
  auto step_dir = checkpoint::ImportHf(options);
  if (!step_dir.ok()) {
    return ReportError(kName, step_dir.status(), InputOrRuntimeExitCode(step_dir.status()));
  }
  TS_LOG(INFO) << "imported " << options.hf_dir << " to " << *step_dir;
  return kExitOk;
}

}  // namespace

Command ImportHfCommand() {
  return {.name = kName,
          .usage = "import-hf HF_DIR --out CHECKPOINT_DIR [--tokenizer FILE]",
          .summary = "a Hugging Face Llama model as a step-0 checkpoint",
          .args = {.flags = {Flag::Value("out", "a directory"), Flag::Value("tokenizer", "a file")},
                   .max_positionals = 1},
          .run = Import};
}

}  // namespace tessera::cli
