// The single-process training loop: owns the model, the optimizer, the data and the run
// directory. Create() validates everything that depends on the config and the data before any
// model memory is allocated; Run() trains.
#pragma once

#include <fstream>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sequence_sampler.h"
#include "data/token_corpus.h"
#include "trainer/config.h"
#include "trainer/flat_adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/model.h"

namespace tessera {

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Config& config);

  // Trains for train.steps steps, logging and evaluating as configured.
  absl::Status Run();
  // Mean loss over train.eval_batches micro-batches of held-out data (the same ones each time).
  double Evaluate();

  const std::vector<StepMetrics>& history() const { return history_; }
  Transformer& model() { return model_; }
  torch::Device device() const { return device_; }

 private:
  Trainer(const Config& config, torch::Device device);
  absl::Status Setup();
  // One optimizer step over global_batch sequences; fills loss, grad_norm and lr.
  void TrainStep(int64_t step, StepMetrics* metrics);

  Config config_;
  torch::Device device_;
  data::TokenCorpus train_corpus_, val_corpus_;
  std::unique_ptr<data::SequenceSampler> train_sampler_, val_sampler_;
  Transformer model_{nullptr};
  std::unique_ptr<FlatAdamW> optimizer_;
  LrSchedule schedule_{};
  double flops_per_token_ = 0;
  double peak_tflops_ = 0;
  std::ofstream metrics_file_;
  std::vector<StepMetrics> history_;
};

}  // namespace tessera
