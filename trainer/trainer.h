// The training loop on one rank of the process grid: owns this rank's model chunks and the
// pipeline executor that runs the schedule over them, the data-parallel gradient reducer, the optimizer (over
// this rank's ZeRO shard), the loader of this rank's slice of each global batch, and (on rank 0) the run
// directory's metrics. Create() validates everything that depends on the config, the layout and the data
// before any model memory is allocated; Run() trains. A world of one process is the same code with identity
// communicators.
#pragma once

#include <deque>
#include <fstream>
#include <memory>
#include <set>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_writer.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/sample_stream.h"
#include "model/model.h"
#include "model/pipeline_stage.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/partition.h"
#include "parallel/process_grid.h"
#include "trainer/flat_adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/tensorboard/tensorboard_writer.h"
#include "trainer/training_state.h"

namespace tessera {

// "cuda" or "cpu": what train.device ("auto", "cpu", "cuda") means on this machine and build.
std::string ResolvedDeviceKind(const std::string& train_device);

// Agreement after a step every rank takes alone (setup): an all-reduce over the world of whether
// each rank succeeded. Returns `mine` where it failed here, an error naming the failed ranks'
// count where it failed elsewhere, else OK. Collective over the world.
absl::Status AllRanksOk(parallel::ProcessGrid& grid, const absl::Status& mine);

class Trainer {
 public:
  // `grid` must outlive the trainer. Collective over the grid's world.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Config& config, parallel::ProcessGrid& grid);

  // Trains for train.steps steps, logging and evaluating as configured. Collective.
  absl::Status Run();
  // Mean loss over train.eval_batches micro-batches of held-out data (the same ones each time,
  // split over the data-parallel ranks). Collective.
  absl::StatusOr<double> Evaluate();

  const std::vector<StepMetrics>& history() const { return history_; }
  // This rank's first model chunk (the whole model in a single process).
  Transformer& model() { return stage_->chunks().front(); }
  torch::Device device() const { return device_; }

 private:
  Trainer(const Config& config, parallel::ProcessGrid& grid, torch::Device device);
  absl::Status Setup();
  absl::Status SetupData();
  absl::Status SetupModel();
  // The checkpoint writer, and the resume: finds the checkpoint to start from (any layout) and
  // loads this rank's slices of it. Collective.
  absl::Status SetupCheckpoints();
  // Saves the state after `steps_done` steps (collective); waits for it when `wait`.
  absl::Status SaveCheckpoint(int64_t steps_done, bool wait);
  // Loads this rank's slices and the loop's counters (start_step_ and friends) from `reader`.
  absl::Status LoadCheckpoint(const checkpoint::CheckpointReader& reader, bool* had_optimizer);
  // train.on_divergence: rollback: reloads the newest checkpoint, keeps the data position (the
  // batches since the checkpoint are skipped) and returns the checkpoint's step. Collective.
  absl::StatusOr<int64_t> RollBack(int64_t failed_step);
  static constexpr int kMaxRollbacks = 3;
  // Forward-only pass of one held-out micro-batch through the pipeline; the loss on every rank.
  absl::StatusOr<double> EvalMicroBatch(const data::LocalBatch& batch);
  // One optimizer step over this rank's slice of a global batch; fills loss, grad_norm, lr and
  // data_wait_s.
  absl::Status TrainStep(int64_t step, StepMetrics* metrics);
  // Sums the gradients of the tied embedding's two copies (first and last pipeline stage).
  absl::Status SumTiedEmbeddingGrads();
  // The loss-spike and NaN guard: whether this step's update is skipped (the same decision on
  // every rank: loss and gradient norm are already all-reduced).
  bool ShouldSkipUpdate(double loss, double grad_norm) const;
  // Under pipelining: the last step's measured bubble and peak live activations against the
  // simulator's prediction (rank 0 prints). Collective over the pipeline group.
  absl::Status LogPipelineBubble();
  // fp64 scalars for small collectives, on the device the communicators use.
  torch::TensorOptions ScalarOptions() const {
    return torch::TensorOptions().dtype(torch::kDouble).device(device_);
  }
  bool is_logger() const { return grid_.rank() == 0; }

  Config config_;
  parallel::ProcessGrid& grid_;
  torch::Device device_;
  std::shared_ptr<const data::SampleStream> train_stream_, val_stream_;
  std::unique_ptr<data::Loader> loader_;
  parallel::pipeline::Partition partition_;
  std::unique_ptr<ModelPipelineStage> stage_;
  std::unique_ptr<parallel::pipeline::PipelineExecutor> executor_;
  std::unique_ptr<parallel::GradReducer> reducer_;
  RankParameters rank_params_;                               // in the reducer's order
  std::unique_ptr<parallel::Communicator> checkpoint_comm_;  // the writer's own (async saves)
  std::unique_ptr<checkpoint::CheckpointWriter> checkpointer_;
  std::string checkpoint_dir_;
  int64_t start_step_ = 0;    // steps already done (resumed)
  int64_t start_sample_ = 0;  // global samples already consumed (resumed)
  std::unique_ptr<FlatAdamW> optimizer_;
  LrSchedule schedule_{};
  int64_t local_batch_ = 0;  // rows of each global batch on this rank
  double flops_per_token_ = 0;
  double peak_tflops_ = 0;
  std::ofstream metrics_file_;
  std::unique_ptr<tensorboard::TensorBoardWriter> tensorboard_;
  std::deque<double> recent_losses_;  // of accepted steps, for the spike test
  int64_t consecutive_skips_ = 0, skipped_total_ = 0;
  int rollbacks_ = 0;
  // TESSERA_FAULT_NAN_GRAD_STEPS: steps (1-based) whose gradients are poisoned with NaN, to
  // exercise the guard end to end (tests).
  std::set<int64_t> fault_nan_steps_;
  std::vector<StepMetrics> history_;
};

}  // namespace tessera
