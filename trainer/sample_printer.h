// train.sample_every: every N steps (and at the last step) rank 0 prints a short greedy
// continuation of train.sample_prompt with the key/value cache (model/generate.h), so a run
// shows what its model writes while it learns. Greedy decoding draws no random numbers and the
// cache runs without gradients, so sampling changes nothing the run computes afterwards.
// It needs data.tokenizer and a rank 0 that holds the whole model; otherwise it says once why
// it is off.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "data/bpe_tokenizer.h"

namespace tessera {

class TransformerImpl;

class SamplePrinter {
 public:
  // `whole_model`: this rank holds every parameter whole between steps (no TP, no PP, ZeRO < 3);
  // `why_not` says otherwise which layout prevents it. Errors: data.tokenizer does not load or
  // does not fit model.vocab_size, train.sample_prompt encodes to no tokens.
  static absl::StatusOr<std::unique_ptr<SamplePrinter>> Create(const Config& config, bool is_logger,
                                                               bool whole_model, const std::string& why_not);

  // Whether a sample is due after `done` steps (the same answer on every rank).
  bool Due(int64_t done) const;
  // Prints the sample of `model` after `done` steps on rank 0 (call when Due; nothing elsewhere).
  absl::Status Print(int64_t done, TransformerImpl& model) const;

 private:
  SamplePrinter() = default;

  int64_t every_ = 0;
  int64_t steps_ = 0;
  int64_t tokens_ = 0;
  std::string prompt_;
  std::vector<int64_t> prompt_ids_;
  std::unique_ptr<data::BpeTokenizer> tokenizer_;  // set only where it prints
};

}  // namespace tessera
