// The logits command (logits_command.h): resolve the checkpoint, build the model of its saved
// config for the longest sequence, load the weights, one forward pass per sequence. Floats are
// printed in their shortest round-trip form, so a reader gets the exact fp32 values.
#include "cli/logits_command.h"

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
#include "core/status_macros.h"
#include "interop/model_weights.h"
#include "model/model.h"

namespace tessera::checkpoint {
namespace {

constexpr char kUsage[] =
    "usage: tessera logits CHECKPOINT --tokens ID,ID,... [--tokens ...]\n"
    "  prints one JSON line per sequence: {\"tokens\": [...], \"logits\": [[...], ...]} (fp32)\n";

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

}  // namespace

int LogitsCommand(const std::vector<std::string>& args) {
  std::string checkpoint;
  std::vector<std::vector<int64_t>> sequences;
  auto usage = [](const std::string& message) {
    std::fprintf(stderr, "tessera logits: error: %s\n%s", message.c_str(), kUsage);
    return 2;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--tokens") {
      if (i + 1 >= args.size()) return usage("--tokens needs a list such as 1,2,3");
      std::vector<int64_t> ids;
      for (absl::string_view piece : absl::StrSplit(args[++i], ',')) {
        int64_t id;
        if (!absl::SimpleAtoi(piece, &id))
          return usage(absl::StrCat("--tokens: '", std::string(piece), "' is not an integer"));
        ids.push_back(id);
      }
      sequences.push_back(std::move(ids));
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a.rfind("-", 0) == 0) {
      return usage(absl::StrCat("unknown option '", a, "'"));
    } else if (checkpoint.empty()) {
      checkpoint = a;
    } else {
      return usage(absl::StrCat("unexpected argument '", a, "'"));
    }
  }
  if (checkpoint.empty()) return usage("no checkpoint given");
  if (sequences.empty()) return usage("no --tokens given");
  absl::Status status = Run(checkpoint, sequences);
  if (!status.ok()) {
    std::fprintf(stderr, "tessera logits: error: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace tessera::checkpoint
