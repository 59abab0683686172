// `tessera generate CHECKPOINT --tokenizer T [--prompt TEXT | --prompts FILE] ...`: loads a
// checkpoint of any layout into one process (as `tessera logits` does), then continues each
// prompt with the key/value cache (model/generate.h), printing the text as it is generated.
// Prefill and decode rates go to stderr at the end of each prompt; --ids-out writes the prompt
// and generated ids as JSON lines (for comparisons with other implementations).
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "cli/commands.h"
#include "cli/token_io.h"
#include "core/exit_codes.h"
#include "core/status_macros.h"
#include "data/utf8_stream.h"
#include "interop/model_weights.h"
#include "model/generate.h"
#include "model/model.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "generate";
// A model's vocabulary may be the tokenizer's ids rounded up for efficient products (configs
// round to 64 or 128); more rows than this beyond the tokenizer's ids mean another tokenizer.
constexpr int64_t kMaxVocabPadding = 1024;

struct GenerateFlags {
  std::string checkpoint;
  std::vector<std::string> prompts;
  GenerateOptions options;
  std::string ids_out;
  int64_t threads = 0;  // LibTorch's CPU threads; 0: its default
};

absl::StatusOr<std::vector<std::string>> ReadPrompts(const Args& args) {
  if (args.Has("prompt") == args.Has("prompts")) {
    return absl::InvalidArgumentError("give one of --prompt TEXT or --prompts FILE (one prompt per line)");
  }
  if (args.Has("prompt")) return std::vector<std::string>{args.Get("prompt")};
  std::ifstream in(args.Get("prompts"));
  if (!in) return absl::NotFoundError(absl::StrCat("--prompts: cannot read '", args.Get("prompts"), "'"));
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) prompts.push_back(line);
  }
  if (prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--prompts: '", args.Get("prompts"), "' has no prompts"));
  }
  return prompts;
}

absl::StatusOr<GenerateFlags> ParseFlags(const Args& args) {
  GenerateFlags flags;
  if (args.positional().empty()) return absl::InvalidArgumentError("no checkpoint given");
  flags.checkpoint = args.positional()[0];
  TS_ASSIGN_OR_RETURN(flags.prompts, ReadPrompts(args));
  TS_ASSIGN_OR_RETURN(flags.options.max_new_tokens,
                      args.GetInt("max-new-tokens", 64, {.min = 1, .max = 1 << 20}));
  TS_ASSIGN_OR_RETURN(flags.options.sampling.temperature, args.GetDouble("temperature", 0.8));
  TS_ASSIGN_OR_RETURN(flags.options.sampling.top_p, args.GetDouble("top-p", 0.95));
  TS_ASSIGN_OR_RETURN(flags.options.sampling.top_k, args.GetInt("top-k", 0));
  TS_ASSIGN_OR_RETURN(const int64_t seed, args.GetInt("seed", 0, {.min = 0}));
  flags.options.seed = static_cast<uint64_t>(seed);
  TS_RETURN_IF_ERROR(ValidateSamplingOptions(flags.options.sampling));
  flags.ids_out = args.Get("ids-out");
  TS_ASSIGN_OR_RETURN(flags.threads, args.GetInt("threads", 0, {.min = 0, .max = 4096}));
  return flags;
}

// The checkpoint's model must embed every id of the tokenizer and hold no more than padding.
absl::Status CheckVocabulary(const ModelConfig& config, const data::BpeTokenizer& tokenizer,
                             const std::string& checkpoint) {
  const int64_t ids = tokenizer.vocab_size();
  if (config.vocab_size < ids || config.vocab_size >= ids + kMaxVocabPadding) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the checkpoint ", checkpoint, " has model.vocab_size = ", config.vocab_size, " but the tokenizer ",
        tokenizer.source(), " has vocab_size = ", ids, " ids (",
        config.vocab_size < ids ? "fewer embedding rows than token ids"
                                : absl::StrCat("more than ", kMaxVocabPadding, " rows of padding"),
        "): the model was trained with another tokenizer"));
  }
  return absl::OkStatus();
}

void PrintRates(size_t index, size_t prompt_tokens, const GenerateResult& r) {
  const size_t decoded = r.tokens.empty() ? 0 : r.tokens.size() - 1;  // forward passes after prefill
  std::fprintf(stderr,
               "[generate] prompt %zu: prefill %zu tokens in %.3f s (%.1f tokens/s), decode %zu tokens in "
               "%.3f s (%.1f tokens/s)%s\n",
               index + 1, prompt_tokens, r.prefill_seconds, prompt_tokens / std::max(r.prefill_seconds, 1e-9),
               decoded, r.decode_seconds, decoded / std::max(r.decode_seconds, 1e-9),
               r.reached_eod ? ", stopped at the end-of-text token" : "");
}

// Generates from one prompt, printing the prompt and then each new token's text as it comes.
absl::StatusOr<std::string> GenerateOne(TransformerImpl& model, const data::BpeTokenizer& tokenizer,
                                        const GenerateFlags& flags, size_t index) {
  std::vector<int32_t> ids;
  TS_RETURN_IF_ERROR(tokenizer.EncodeOrdinary(flags.prompts[index], &ids));
  const std::vector<int64_t> prompt(ids.begin(), ids.end());
  if (prompt.empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", index + 1, " is empty"));
  std::fputs(flags.prompts[index].c_str(), stdout);
  std::fflush(stdout);
  data::Utf8Stream stream;
  absl::Status decode_error;
  auto on_token = [&](int64_t id) {
    if (tokenizer.eod_id().has_value() && id == *tokenizer.eod_id()) return;
    absl::StatusOr<std::string> bytes = tokenizer.Decode({static_cast<int32_t>(id)});
    if (!bytes.ok()) {
      decode_error.Update(bytes.status());
      return;
    }
    std::fputs(stream.Push(*bytes).c_str(), stdout);
    std::fflush(stdout);
  };
  GenerateOptions options = flags.options;
  if (tokenizer.eod_id().has_value()) options.eod = *tokenizer.eod_id();
  options.token_limit = tokenizer.vocab_size();
  TS_ASSIGN_OR_RETURN(GenerateResult result, Generate(model, prompt, options, on_token));
  TS_RETURN_IF_ERROR(decode_error);
  std::fputs(absl::StrCat(stream.Flush(), "\n").c_str(), stdout);
  std::fflush(stdout);
  PrintRates(index, prompt.size(), result);
  return absl::StrFormat("{\"prompt\": [%s], \"tokens\": [%s], \"min_margin\": %.9g}\n",
                         absl::StrJoin(prompt, ", "), absl::StrJoin(result.tokens, ", "), result.min_margin);
}

absl::Status Run(const GenerateFlags& flags, const data::BpeTokenizer& tokenizer) {
  using checkpoint::CheckpointReader;
  TS_ASSIGN_OR_RETURN(checkpoint::FoundCheckpoint found,
                      checkpoint::ResolveCheckpoint(flags.checkpoint, checkpoint::Verify::kStructure));
  TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(found.path));
  TS_ASSIGN_OR_RETURN(ModelConfig config,
                      checkpoint::ModelConfigFromManifest(
                          reader->manifest(), absl::StrCat(found.path, "/", checkpoint::kManifestFileName)));
  TS_RETURN_IF_ERROR(CheckVocabulary(config, tokenizer, found.path));
  config.recompute = RecomputeMode::kNone;  // nothing is recorded for backward here
  // One token's products are small: on a busy machine, threads that wait for each other cost
  // more than they share (docs/checkpoints.md has measurements).
  if (flags.threads > 0) at::set_num_threads(static_cast<int>(flags.threads));
  Transformer model(config, 1);  // the cache makes its own rotary tables for the positions it holds
  TS_RETURN_IF_ERROR(checkpoint::LoadModelWeights(*reader, *model));
  model->eval();
  std::string records;
  for (size_t i = 0; i < flags.prompts.size(); ++i) {
    if (i > 0) std::fputs("\n", stdout);
    TS_ASSIGN_OR_RETURN(std::string record, GenerateOne(*model, tokenizer, flags, i));
    records += record;
  }
  if (!flags.ids_out.empty()) {
    std::ofstream out(flags.ids_out, std::ios::binary | std::ios::trunc);
    out << records;
    if (!out.flush())
      return absl::InternalError(absl::StrCat("--ids-out: cannot write '", flags.ids_out, "'"));
  }
  return absl::OkStatus();
}

int GenerateText(const Args& args) {
  absl::StatusOr<GenerateFlags> flags = ParseFlags(args);
  if (!flags.ok()) {
    return flags.status().code() == absl::StatusCode::kInvalidArgument
               ? ReportUsageError(kName, flags.status())
               : ReportError(kName, flags.status(), InputOrRuntimeExitCode(flags.status()));
  }
  auto tokenizer = TokenizerFromArgs(args);
  if (!tokenizer.ok()) return ReportError(kName, tokenizer.status(), kExitUsage);
  const absl::Status status = Run(*flags, **tokenizer);
  if (!status.ok()) return ReportError(kName, status, InputOrRuntimeExitCode(status));
  return kExitOk;
}

}  // namespace

Command GenerateCommand() {
  return {
      .name = kName,
      .usage =
          "generate CHECKPOINT --tokenizer T (--prompt TEXT | --prompts FILE) [--max-new-tokens 64]\n"
          "    [--temperature 0.8] [--top-p 0.95] [--top-k 0] [--seed 0] [--threads N] [--ids-out FILE]",
      .summary = "continue prompts with a checkpoint's model\n(KV cache, one process; prints tokens/s)",
      .details = absl::StrCat(
          "  CHECKPOINT: a step directory or a checkpoint directory, saved in any layout\n"
          "  --temperature 0 is greedy; --top-k 0 and --top-p 1 turn those filters off\n"
          "  stops at the tokenizer's end-of-text token or after --max-new-tokens\n"
          "  --threads N: LibTorch's CPU threads (0: its default, OMP_NUM_THREADS or the cores)\n"
          "  --ids-out FILE: a JSON line per prompt with its ids, the new ids and the smallest\n"
          "    top-1 minus top-2 logit of the choices made\n  ",
          kTokenizerNote),
      .args = {.flags = TokenizerFlags(
                   {Flag::Value("prompt", "a text"), Flag::Value("prompts", "a file"),
                    Flag::Value("max-new-tokens", "a positive integer"),
                    Flag::Value("temperature", "a number >= 0"), Flag::Value("top-p", "a number in (0, 1]"),
                    Flag::Value("top-k", "an integer >= 0"), Flag::Value("seed", "an integer >= 0"),
                    Flag::Value("threads", "an integer >= 0"), Flag::Value("ids-out", "a file")}),
               .max_positionals = 1},
      .run = GenerateText};
}

}  // namespace tessera::cli
