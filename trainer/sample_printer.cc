// Sampling during training: the tokenizer is loaded on rank 0 only, once, at setup.
#include "trainer/sample_printer.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "model/generate.h"
#include "model/model.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<SamplePrinter>> SamplePrinter::Create(const Config& config, bool is_logger,
                                                                     bool whole_model,
                                                                     const std::string& why_not) {
  std::unique_ptr<SamplePrinter> printer(new SamplePrinter());
  const TrainConfig& t = config.train;
  if (t.sample_every == 0) return printer;
  if (config.data.tokenizer.empty() || !whole_model) {
    if (is_logger) {
      TS_LOG(INFO) << "train.sample_every = " << t.sample_every << ": no samples are printed, "
                   << (config.data.tokenizer.empty()
                           ? "data.tokenizer is not set (set it to the tokenizer the data was made with)"
                           : why_not);
    }
    return printer;
  }
  // Every rank knows the steps that sample (such a step's figures are read at once on all of
  // them, as for logging); only rank 0 loads the tokenizer and prints.
  printer->every_ = t.sample_every;
  printer->steps_ = t.steps;
  if (!is_logger) return printer;
  auto tokenizer = data::LoadTokenizer(config.data.tokenizer);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), "data.tokenizer: ");
  if ((*tokenizer)->vocab_size() > config.model.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.tokenizer ", config.data.tokenizer, " has vocab_size = ", (*tokenizer)->vocab_size(),
        " ids but model.vocab_size = ", config.model.vocab_size, ": the model cannot embed them"));
  }
  std::vector<int32_t> ids;
  TS_RETURN_IF_ERROR(Annotate((*tokenizer)->EncodeOrdinary(t.sample_prompt, &ids), "train.sample_prompt: "));
  if (ids.empty()) return absl::InvalidArgumentError("train.sample_prompt is empty: it needs some text");
  printer->tokens_ = t.sample_tokens;
  printer->prompt_ = t.sample_prompt;
  printer->prompt_ids_.assign(ids.begin(), ids.end());
  printer->tokenizer_ = *std::move(tokenizer);
  return printer;
}

bool SamplePrinter::Due(int64_t done) const { return every_ > 0 && (done % every_ == 0 || done == steps_); }

absl::Status SamplePrinter::Print(int64_t done, TransformerImpl& model) const {
  if (tokenizer_ == nullptr) return absl::OkStatus();  // not rank 0
  GenerateOptions options;
  options.max_new_tokens = tokens_;  // temperature 0: greedy, no random numbers drawn
  options.token_limit = tokenizer_->vocab_size();
  if (tokenizer_->eod_id().has_value()) options.eod = *tokenizer_->eod_id();
  TS_ASSIGN_OR_RETURN(GenerateResult result, Generate(model, prompt_ids_, options));
  std::vector<int32_t> ids;
  for (int64_t id : result.tokens) {
    if (!options.eod.has_value() || id != *options.eod) ids.push_back(static_cast<int32_t>(id));
  }
  TS_ASSIGN_OR_RETURN(std::string text, tokenizer_->Decode(ids));
  const double seconds = result.prefill_seconds + result.decode_seconds;
  // One log line: newlines of the text are shown as \n.
  TS_LOG(INFO) << "sample at step " << done << ": "
               << absl::StrReplaceAll(absl::StrCat(prompt_, "|", text), {{"\n", "\\n"}})
               << absl::StrFormat(" (%d tokens, %.1f tokens/s)", result.tokens.size(),
                                  result.tokens.size() / std::max(seconds, 1e-9));
  return absl::OkStatus();
}

}  // namespace tessera
