// Held-out loss: train.eval_batches micro-batches of data.val (the same ones at every
// evaluation), every train.eval_every steps and at the last step. The micro-batches are split
// over the data-parallel ranks (micro-batch b on DP rank b % dp) and each rank's run through the
// pipeline executor as a forward-only schedule (parallel/pipeline: ForwardOnlySchedule) over
// the training's model chunks, so the figure is the same for every layout.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/sample_stream.h"
#include "model/pipeline_stage.h"
#include "parallel/data_parallel/unit_gatherer.h"
#include "parallel/pipeline/executor.h"
#include "parallel/process_grid.h"
#include "trainer/metrics.h"

namespace tessera {

class Evaluator {
 public:
  // `val` may be null (train.eval_every = 0): never due. `stage` (the training's model chunks)
  // and `grid` must outlive the evaluator.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Create(const TrainConfig& train,
                                                           std::shared_ptr<const data::SampleStream> val,
                                                           ModelPipelineStage& stage,
                                                           parallel::ProcessGrid& grid,
                                                           int64_t virtual_stages, torch::Device device);

  // Whether step `step` (0-based) evaluates.
  bool Due(int64_t step) const;
  // Evaluates when Due, into metrics->eval_loss. Collective.
  absl::Status MaybeEvaluate(int64_t step, StepMetrics* metrics);
  // The mean loss over the eval micro-batches (NaN without held-out data). Collective.
  absl::StatusOr<double> Evaluate();
  // Under parallel.zero 1, 2 and 3: the gatherer of the model's units (Evaluate gathers them
  // all for the evaluation and frees them after; at zero 1 and 2 it waits for the all-gather of
  // updated weights); nullptr otherwise.
  void set_unit_gatherer(parallel::UnitGatherer* gatherer) { gatherer_ = gatherer; }

 private:
  Evaluator(const TrainConfig& train, std::shared_ptr<const data::SampleStream> val,
            ModelPipelineStage& stage, parallel::ProcessGrid& grid, torch::Device device)
      : train_(train), val_(std::move(val)), stage_(stage), grid_(grid), device_(device) {}
  // This DP rank's micro-batches, read once: micro-batch i holds held-out samples
  // [b * micro_batch, (b + 1) * micro_batch) for b = dp_rank + i * dp.
  absl::Status ReadBatch();
  // Evaluate, with the parameters whole.
  absl::StatusOr<double> EvaluateHeld();

  TrainConfig train_;
  std::shared_ptr<const data::SampleStream> val_;
  ModelPipelineStage& stage_;
  parallel::ProcessGrid& grid_;
  torch::Device device_;
  int64_t microbatches_ = 0;                                        // on this DP rank
  std::unique_ptr<parallel::pipeline::PipelineExecutor> executor_;  // null when microbatches_ == 0
  data::LocalBatch batch_;
  bool batch_read_ = false;
  parallel::UnitGatherer* gatherer_ = nullptr;
};

}  // namespace tessera
