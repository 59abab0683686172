// The training loop on one rank of the process grid: owns this rank's model chunks and the
// pipeline executor that runs the schedule over them, the data-parallel gradient reducer, the
// optimizer (over this rank's ZeRO shard), the loader of this rank's slice of each global batch,
// and the loop's components, each deciding its own timing: the evaluator, the divergence guard,
// the metrics sink, the checkpoint policy and the step profiler. Create() validates everything
// that depends on the config, the layout and the data before any model memory is allocated;
// Run() trains. A world of one process is the same code with identity communicators.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/sample_stream.h"
#include "model/model.h"
#include "model/pipeline_stage.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/partition.h"
#include "parallel/process_grid.h"
#include "trainer/checkpoint_policy.h"
#include "trainer/cuda_graph_policy.h"
#include "trainer/device.h"
#include "trainer/divergence_guard.h"
#include "trainer/evaluator.h"
#include "trainer/flat_adamw.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/metrics_sink.h"
#include "trainer/micro_step_graph.h"
#include "trainer/sample_printer.h"
#include "trainer/step_profiler.h"
#include "trainer/step_readback.h"
#include "trainer/training_state.h"

namespace tessera {

// Agreement after a step every rank takes alone (setup): an all-reduce over the world of whether
// each rank succeeded. Returns `mine` where it failed here (marked OnEveryRank when every rank
// failed with the same message: printed once), an error naming the failed ranks' count where it
// failed elsewhere, else OK. Collective over the world.
absl::Status AllRanksOk(parallel::ProcessGrid& grid, const absl::Status& mine);

class Trainer {
 public:
  // `grid` must outlive the trainer. Collective over the grid's world.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const Config& config, parallel::ProcessGrid& grid);

  // Trains for train.steps steps, logging and evaluating as configured. Collective.
  absl::Status Run();
  // Mean loss over train.eval_batches micro-batches of held-out data (the same ones each time,
  // split over the data-parallel ranks). Collective.
  absl::StatusOr<double> Evaluate() { return evaluator_->Evaluate(); }

  const std::vector<StepMetrics>& history() const { return history_; }
  // Called at the end of every step with the steps done (not after a rollback): lets tests
  // count the host synchronisations of each step (core/host_sync.h).
  void set_step_end_hook(std::function<void(int64_t steps_done)> hook) { step_end_hook_ = std::move(hook); }
  // This rank's first model chunk (the whole model in a single process).
  Transformer& model() { return stage_->chunks().front(); }
  torch::Device device() const { return device_; }
  // train.cuda_graphs: the decision, and the replays of the captured micro-step so far.
  const CudaGraphDecision& cuda_graphs() const { return cuda_graphs_; }
  int64_t cuda_graph_replays() const { return micro_graph_ ? micro_graph_->replays() : 0; }
  // Tests: after the warm-up steps, run the micro-steps through `recorder` whatever the decision
  // (the caller keeps to a layout the decision allows: one chunk, zero 0 or 1). With the CPU
  // stand-in (MakeRerunRecorder) the captured step's logic runs on the CPU. Before Run.
  void UseStepRecorder(std::unique_ptr<StepRecorder> recorder);

 private:
  using Clock = std::chrono::steady_clock;

  Trainer(const Config& config, parallel::ProcessGrid& grid, torch::Device device);
  // Setup, in this order.
  absl::Status Setup();
  absl::Status CheckBatchLayout();
  absl::Status SetupData();
  absl::Status SetupModel();
  absl::StatusOr<parallel::pipeline::Schedule> TrainingSchedule(int64_t microbatches) const;
  absl::StatusOr<std::vector<Transformer>> BuildChunks() const;
  // The gradient reducer over the chunks' parameters, as the model's sharding plan says.
  absl::Status SetupReducer(const std::vector<Transformer>& chunks);
  absl::Status SetupCheckpoints();
  absl::Status SetupLoader();
  // train.sample_every (sample_printer.h); after SetupModel.
  absl::Status SetupSampler();
  // train.cuda_graphs (cuda_graph_policy.h); after SetupModel.
  void SetupCudaGraphs();
  void LogSetup() const;

  // One optimizer step over this rank's slice of a global batch; fills lr and data_wait_s and
  // leaves the figures read back later in step_figures_: the loss, the gradient norm, the skip
  // decision and the stop signal, all decided on the device. Reads back the previous step's
  // figures if they are pending.
  absl::Status TrainStep(int64_t step, StepMetrics* metrics);
  // Whether the host needs step `step`'s figures at its end: it logs, evaluates or saves, it
  // may diverge, or a stop signal came. Other steps are read during the next step.
  bool NeedsFiguresNow(int64_t step, const StepMetrics& metrics) const;
  // Reads a step's figures into `metrics` and books its skip decision with the guard.
  absl::Status ReadFigures(StepReadback& figures, StepMetrics* metrics);
  // Reads the pending step's figures, if any, and records its metrics.
  absl::Status SettlePending();
  // After a step read at once: the divergence verdict (a rollback returns the checkpoint's step
  // less one, where the loop goes on), evaluation, logs, the stop signal and checkpoints.
  absl::StatusOr<int64_t> FinishStep(int64_t step, StepMetrics& metrics);
  // The step's time, throughput, MFU and memory (and, after the first step, the end of start-up);
  // `synchronize`: wait for the device first.
  void MeasureStep(int64_t step, Clock::time_point start, bool synchronize, StepMetrics* metrics);
  // Sums the gradients of the tied embedding's two copies (first and last pipeline stage).
  absl::Status SumTiedEmbeddingGrads();
  // Under pipelining: the last step's measured bubble and peak live activations against the
  // simulator's prediction (rank 0 prints). Collective over the pipeline group.
  absl::Status LogPipelineBubble();
  // fp64 scalars for small collectives, on the device the communicators use.
  torch::TensorOptions ScalarOptions() const {
    return torch::TensorOptions().dtype(torch::kDouble).device(device_);
  }
  bool is_logger() const { return grid_.rank() == 0; }
  bool sequence_parallel() const {
    return config_.parallel.sequence_parallel && grid_.topology().dims().tp > 1;
  }

  Config config_;
  parallel::ProcessGrid& grid_;
  torch::Device device_;
  std::shared_ptr<const data::SampleStream> train_stream_, val_stream_;
  std::unique_ptr<data::Loader> loader_;
  parallel::pipeline::Partition partition_;
  std::unique_ptr<ModelPipelineStage> stage_;
  std::unique_ptr<parallel::pipeline::PipelineExecutor> executor_;
  std::unique_ptr<parallel::GradReducer> reducer_;
  int64_t gathered_bound_ = 0;  // zero 3: the most parameter bytes gathered at once (bucket_layout.h)
  RankParameters rank_params_;  // in the reducer's order
  std::vector<torch::Tensor> tied_embedding_copies_;  // this rank's copies of the tied embedding (pp > 1)
  std::unique_ptr<FlatAdamW> optimizer_;
  LrSchedule schedule_{};
  int64_t local_batch_ = 0;  // rows of each global batch on this rank
  // The last step that waited for the device, and the steps since that did not (MeasureStep).
  Clock::time_point last_synced_{};
  int64_t unsynced_steps_ = 0;
  int64_t start_step_ = 0;    // steps already done (resumed)
  int64_t start_sample_ = 0;  // global samples already consumed (resumed)
  double flops_per_token_ = 0;
  double peak_tflops_ = 0;
  std::string peak_basis_;  // what set peak_tflops_ (model/flops.h PeakRate)
  // The loop's components.
  std::unique_ptr<MetricsSink> metrics_;
  std::unique_ptr<DivergenceGuard> guard_;
  std::unique_ptr<CheckpointPolicy> checkpoints_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<StepProfiler> profiler_;
  std::unique_ptr<SamplePrinter> sampler_;
  std::vector<StepMetrics> history_;
  // The step whose figures are read during the next step.
  struct PendingStep {
    StepMetrics metrics;
    StepReadback figures;
  };
  std::optional<PendingStep> pending_;
  torch::Tensor step_figures_;  // TrainStep's: loss, grad_norm, skip, signal ({4} fp64)
  int signal_ = 0;              // a stop signal read back with a step's figures
  std::function<void(int64_t)> step_end_hook_;
  CudaGraphDecision cuda_graphs_;
  std::unique_ptr<MicroStepGraph> micro_graph_;  // when the micro-step runs as a graph
  int64_t steps_run_ = 0;                        // TrainStep calls in this process (the warm-up)
};

}  // namespace tessera
