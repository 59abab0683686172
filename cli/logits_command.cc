// `tessera logits CHECKPOINT --tokens 1,2,3 [--tokens ...]`: runs the checkpoint's model (one
// process, fp32) on token sequences and prints the logits as JSON lines, one per sequence:
//   {"tokens": [1, 2, 3], "logits": [[...vocab floats...], ...one row per position]}
// A debugging aid: compare a checkpoint with another implementation (tests/interop/
// hf_interop_test.py compares it with transformers), or two checkpoints with each other.
//
// It resolves the checkpoint, builds the model of its saved config for the longest sequence,
// loads the weights and runs one forward pass per sequence. Floats are printed in their shortest
// round-trip form, so a reader gets the exact fp32 values.
#include <torch/torch.h>

#include <charconv>
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "cli/commands.h"
#include "core/exit_codes.h"
#include "core/status_macros.h"
#include "interop/model_weights.h"
#include "model/model.h"

namespace tessera::cli {
namespace {

using checkpoint::CheckpointReader;
using checkpoint::FoundCheckpoint;
using checkpoint::kManifestFileName;
using checkpoint::LoadModelWeights;
using checkpoint::ModelConfigFromManifest;
using checkpoint::ResolveCheckpoint;
using checkpoint::Verify;

constexpr char kName[] = "logits";

std::string Float(float v) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, end);
}

absl::Status Run(const std::string& checkpoint, const std::vector<std::vector<int64_t>>& sequences) {
  TS_ASSIGN_OR_RETURN(FoundCheckpoint found, ResolveCheckpoint(checkpoint, Verify::kStructure));
  TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(found.path));
  TS_ASSIGN_OR_RETURN(
      ModelConfig config,
      ModelConfigFromManifest(reader->manifest(), absl::StrCat(found.path, "/", kManifestFileName)));
  int64_t longest = 1;
  for (const auto& s : sequences) {
    longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
    for (int64_t id : s) {
      if (id < 0 || id >= config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token ", id, " is outside the vocabulary [0, ", config.vocab_size, ")"));
      }
    }
  }
  Transformer model(config, longest);
  TS_RETURN_IF_ERROR(LoadModelWeights(*reader, *model));
  torch::NoGradGuard no_grad;
  for (const auto& s : sequences) {
    const torch::Tensor tokens = torch::tensor(s, torch::kInt64).view({1, -1});
    const torch::Tensor logits = model->forward(tokens)[0].contiguous();
    const float* p = logits.data_ptr<float>();
    std::string line = absl::StrCat("{\"tokens\": [", absl::StrJoin(s, ", "), "], \"logits\": [");
    for (int64_t t = 0; t < logits.size(0); ++t) {
      absl::StrAppend(&line, t ? ", [" : "[");
      for (int64_t v = 0; v < logits.size(1); ++v)
        absl::StrAppend(&line, v ? ", " : "", Float(p[t * logits.size(1) + v]));
      absl::StrAppend(&line, "]");
    }
    absl::StrAppend(&line, "]}\n");
    std::fputs(line.c_str(), stdout);
  }
  return absl::OkStatus();
}

// The sequences of every --tokens 1,2,3.
absl::StatusOr<std::vector<std::vector<int64_t>>> Sequences(const Args& args) {
  std::vector<std::vector<int64_t>> sequences;
  for (const std::string& list : args.GetAll("tokens")) {
    std::vector<int64_t> ids;
    for (absl::string_view piece : absl::StrSplit(list, ',')) {
      int64_t id;
      if (!absl::SimpleAtoi(piece, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--tokens: '", std::string(piece), "' is not an integer"));
      }
      ids.push_back(id);
    }
    sequences.push_back(std::move(ids));
  }
  return sequences;
}

int PrintLogits(const Args& args) {
  auto sequences = Sequences(args);
  if (!sequences.ok()) return ReportUsageError(kName, sequences.status());
  if (args.positional().empty())
    return ReportUsageError(kName, absl::InvalidArgumentError("no checkpoint given"));
  if (sequences->empty()) return ReportUsageError(kName, absl::InvalidArgumentError("no --tokens given"));
  absl::Status status = Run(args.positional()[0], *sequences);
  if (!status.ok()) {
    return ReportError(kName, status,
                       status.code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitRuntimeError);
  }
  return kExitOk;
}

}  // namespace

Command LogitsCommand() {
  return {
      .name = kName,
      .usage = "logits CHECKPOINT --tokens ID,ID,... [--tokens ...]",
      .summary = "print a checkpoint's fp32 logits as JSON (debugging)",
      .details = "  prints one JSON line per sequence: {\"tokens\": [...], \"logits\": [[...], ...]} (fp32)",
      .args = {.flags = {Flag::Value("tokens", "a list such as 1,2,3")}, .max_positionals = 1},
      .run = PrintLogits};
}

}  // namespace tessera::cli
