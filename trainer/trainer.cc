// Training loop. Each step: this rank reads its slice of the global batch (global_batch / dp
// rows) from the prefetching loader and runs it in micro-batches of train.micro_batch, each loss
// scaled by 1/micro_steps so that the sum is this rank's mean; the gradient reducer averages over
// the data-parallel group in buckets as backward produces them (on the last micro-step), then
// the global gradient norm, clipping, and AdamW on this rank's ranges (its ZeRO shard), and under
// ZeRO the updated shards are all-gathered. The policies around the step (evaluation, the
// divergence guard, metrics, checkpoints, profiling) are the components in trainer/.
#include "trainer/trainer.h"

#include "kernels/attention_backend.h"
#include "kernels/cuda_kernels_enabled.h"
#include "kernels/linear.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/host_sync.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "data/end_of_document.h"
#include "model/flops.h"
#include "model/sharding.h"
#include "trainer/live_tensor_bytes.h"

namespace tessera {
namespace {

std::string Millions(int64_t n) { return absl::StrFormat("%.2fM", static_cast<double>(n) / 1e6); }
std::string Mib(int64_t bytes) {
  return absl::StrFormat("%.1f MiB (%d bytes)", static_cast<double>(bytes) / 1048576.0, bytes);
}

std::vector<data::CorpusSpec> CorpusSpecs(const std::vector<CorpusEntry>& entries) {
  std::vector<data::CorpusSpec> specs;
  for (const CorpusEntry& e : entries) specs.push_back({e.prefix, e.weight});
  return specs;
}

// 52 bits of the message's hash: exact in a double, for comparing messages across ranks.
double MessageHash(absl::string_view message) {
  const uint64_t hash = std::hash<std::string_view>()(std::string_view(message.data(), message.size()));
  return static_cast<double>(hash & ((uint64_t{1} << 52) - 1));
}

}  // namespace

absl::Status AllRanksOk(parallel::ProcessGrid& grid, const absl::Status& mine) {
  if (grid.world_size() == 1) return mine;
  // On the communicators' device (NCCL carries CUDA tensors only).
  const torch::Device device = grid.device_index() >= 0 ? torch::Device(torch::kCUDA, grid.device_index())
                                                        : torch::Device(torch::kCPU);
  const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
  torch::Tensor failed = torch::full({1}, mine.ok() ? 0.0 : 1.0, options);
  TS_RETURN_IF_ERROR(grid.world().AllReduce(failed, parallel::ReduceOp::kSum));
  const int count = static_cast<int>(HostRead<double>(failed));
  if (count == grid.world_size()) {
    // Every rank failed: the same message everywhere (max of hash and of -hash agree) is one
    // failure, printed once.
    const double hash = MessageHash(mine.message());
    torch::Tensor range = torch::tensor({hash, -hash}, options);
    TS_RETURN_IF_ERROR(grid.world().AllReduce(range, parallel::ReduceOp::kMax));
    if (HostRead<double>(range[0]) == -HostRead<double>(range[1])) return OnEveryRank(mine);
  }
  if (!mine.ok()) return mine;
  if (count == 0) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(count,
                                         " other rank(s) failed to start; their messages are on "
                                         "the console and in their logs"));
}

Trainer::Trainer(const Config& config, parallel::ProcessGrid& grid, torch::Device device)
    : config_(config), grid_(grid), device_(device) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const Config& config, parallel::ProcessGrid& grid) {
  TS_RETURN_IF_ERROR(ValidateConfig(config));
  TS_ASSIGN_OR_RETURN(torch::Device device, ResolveDevice(config.train.device, grid.device_index()));
  std::unique_ptr<Trainer> trainer(new Trainer(config, grid, device));
  TS_RETURN_IF_ERROR(trainer->Setup());
  return trainer;
}

absl::Status Trainer::Run() {
  const TrainConfig& t = config_.train;
  if (start_step_ >= t.steps && is_logger()) {
    TS_LOG(INFO) << "the checkpoint is at step " << start_step_ << " of train.steps = " << t.steps
                 << ": nothing to do";
  }
  TS_RETURN_IF_ERROR(metrics_->Start(start_step_));
  // On the CPU, the tensors the training steps allocate (activations, gradients, temporaries;
  // not the weights and optimizer state that exist already): VmHWM alone cannot tell them apart
  // from the C allocator's cached pages.
  // It is a profiler of the thread, so train.profile_step, which needs the thread's profiler for
  // itself, goes without it.
  std::optional<LiveTensorBytes> live;
  if (device_.is_cpu() && t.profile_step == 0) live.emplace();
  for (int64_t step = start_step_; step < t.steps; ++step) {
    StepMetrics metrics;
    metrics.step = step + 1;
    metrics.total_steps = t.steps;
    const Clock::time_point start = Clock::now();
    TS_RETURN_IF_ERROR(profiler_->Run(step, [&] { return TrainStep(step, &metrics); }));
    if (!NeedsFiguresNow(step, metrics)) {
      // Read during the next step, which finds nothing else to do with them.
      MeasureStep(step, start, /*synchronize=*/false, &metrics);
      pending_.emplace(PendingStep{metrics, StepReadback()});
      pending_->figures.Start(step_figures_);
      if (step_end_hook_) step_end_hook_(step + 1);
      continue;
    }
    MeasureStep(step, start, /*synchronize=*/true, &metrics);
    StepReadback now;
    now.Start(step_figures_);
    TS_RETURN_IF_ERROR(ReadFigures(now, &metrics));
    TS_ASSIGN_OR_RETURN(const int64_t next, FinishStep(step, metrics));
    if (step_end_hook_ && next == step) step_end_hook_(step + 1);
    step = next;
  }
  // The caller may read the weights once the run returns (export, tests).
  TS_RETURN_IF_ERROR(reducer_->WaitParams());
  TS_RETURN_IF_ERROR(metrics_->Close());
  TS_LOG(INFO) << absl::StrFormat("peak memory on this rank: %.1f MiB", PeakMemoryMb(device_));
  if (live) {
    TS_LOG(INFO) << absl::StrFormat(
        "peak live tensors allocated by the training steps on this rank: %.1f MiB",
        static_cast<double>(live->peak()) / (1 << 20));
  }
  if (reducer_->zero() == 3) {
    TS_LOG(INFO) << "zero 3: peak gathered parameters " << Mib(reducer_->PeakGatheredBytes()) << " (bound "
                 << Mib(gathered_bound_) << ", parallel.zero3_prefetch = " << config_.parallel.zero3_prefetch
                 << ")";
  }
  if (reducer_->zero() == 2) {
    TS_LOG(INFO) << "zero 2: peak gradient buckets in flight " << Mib(reducer_->PeakPendingBytes())
                 << " (each freed once its reduce-scatter completed)";
  }
  return checkpoints_->Finish();
}

bool Trainer::NeedsFiguresNow(int64_t step, const StepMetrics& metrics) const {
  const int64_t done = step + 1;
  return metrics_->AtInterval(metrics) || done == 1 || evaluator_->Due(step) ||
         checkpoints_->SavesAfter(done, /*last=*/done == config_.train.steps) || guard_->NextSkipDiverges() ||
         sampler_->Due(done) || signal_ != 0;
}

absl::Status Trainer::ReadFigures(StepReadback& figures, StepMetrics* metrics) {
  TS_ASSIGN_OR_RETURN(const std::vector<double> values, figures.Finish());
  metrics->loss = values[0];
  metrics->grad_norm = values[1];
  guard_->Record(metrics->step - 1, /*skipped=*/values[2] != 0, metrics);
  signal_ = std::max(signal_, static_cast<int>(values[3]));
  return absl::OkStatus();
}

absl::Status Trainer::SettlePending() {
  if (!pending_) return absl::OkStatus();
  PendingStep pending = std::move(*pending_);
  pending_.reset();
  TS_RETURN_IF_ERROR(ReadFigures(pending.figures, &pending.metrics));
  // Nothing else to do for it: NeedsFiguresNow said it logs, evaluates and saves nothing and
  // cannot diverge; a signal it saw stops the loop after the current step.
  history_.push_back(pending.metrics);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Trainer::FinishStep(int64_t step, StepMetrics& metrics) {
  const TrainConfig& t = config_.train;
  // The one place the loop reads the weights outside a forward: evaluation, samples, checkpoints
  // (saved, or loaded by a rollback or a stop) all come below, so the updated weights' gathers
  // must have landed (readers check ParamsPending).
  TS_RETURN_IF_ERROR(reducer_->WaitParams());
  if (const DivergenceGuard::Verdict verdict = guard_->AfterStep();
      verdict != DivergenceGuard::Verdict::kGoOn) {
    metrics_->RecordDiverged(metrics);
    if (verdict == DivergenceGuard::Verdict::kStop) {
      return guard_->DivergedError(metrics, loader_->samples_consumed() - t.global_batch);
    }
    TS_ASSIGN_OR_RETURN(const int64_t resumed, checkpoints_->RollBack(step + 1));
    return resumed - 1;  // the loop's ++step continues after the checkpoint's step
  }
  TS_RETURN_IF_ERROR(evaluator_->MaybeEvaluate(step, &metrics));
  history_.push_back(metrics);
  TS_RETURN_IF_ERROR(metrics_->MaybeLog(metrics));
  if (partition_.pp > 1 && metrics_->AtInterval(metrics)) TS_RETURN_IF_ERROR(LogPipelineBubble());
  if (sampler_->Due(step + 1)) TS_RETURN_IF_ERROR(sampler_->Print(step + 1, *model()));
  TS_RETURN_IF_ERROR(checkpoints_->StopOnSignal(step + 1, signal_));
  TS_RETURN_IF_ERROR(checkpoints_->MaybeSave(step + 1, /*last=*/step + 1 == t.steps));
  return step;
}

absl::Status Trainer::TrainStep(int64_t step, StepMetrics* metrics) {
  const TrainConfig& t = config_.train;
  TS_ASSIGN_OR_RETURN(data::LocalBatch batch, loader_->Next());
  metrics->data_wait_s = loader_->last_wait_seconds();
  reducer_->ZeroGrad();
  absl::StatusOr<torch::Tensor> loss;
  const bool graphed = micro_graph_ && steps_run_ >= kCudaGraphWarmupSteps;
  ++steps_run_;
  if (graphed) {
    // The captured micro-step (micro_step_graph.h): no hook reduces during the replays;
    // FinishBackward below reduces every bucket after the last one. A replay does not run the
    // host's per-unit waits for ZeRO 1's weight gather, so the whole gather is awaited first.
    TS_RETURN_IF_ERROR(reducer_->WaitParams());
    loss = micro_graph_->RunStep(batch);
  } else {
    stage_->SetBatch(&batch, local_batch_ / t.micro_batch);
    // The schedule's forwards and backwards; the reducer's hooks reduce buckets as the last
    // backward of each chunk completes them.
    loss = executor_->RunStepOnDevice();
    stage_->SetBatch(nullptr, 1);
  }
  if (!loss.ok()) return loss.status();
  TS_RETURN_IF_ERROR(reducer_->FinishBackward([this]() -> absl::Status {
    for (Transformer& chunk : stage_->chunks()) TS_RETURN_IF_ERROR(chunk->SyncTensorParallelGrads());
    return SumTiedEmbeddingGrads();
  }));
  // The step's loss: the last stage holds it; the mean over the global batch is the DP-average.
  // Everything below stays on the device: the figures are read back later (Run).
  torch::Tensor loss_sum = loss->reshape({1}).clone();
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(loss_sum, parallel::ReduceOp::kSum));
  // Every context-parallel rank holds as many of each row's targets: the mean over dp x cp is
  // the mean over every token of the global batch.
  TS_RETURN_IF_ERROR(grid_.dp_cp().AllReduce(loss_sum, parallel::ReduceOp::kAvg));
  // The previous step's figures, if still on the device: its work is done by the time this
  // step's forward and backward run, and the spike test of this step needs its loss.
  TS_RETURN_IF_ERROR(SettlePending());
  if (guard_->TakeInjectedFault(step)) {
    torch::NoGradGuard no_grad;
    for (const parallel::OwnedRange& r : reducer_->owned()) r.grads.fill_(std::nan(""));
  }
  TS_ASSIGN_OR_RETURN(const torch::Tensor grad_norm, reducer_->GlobalGradNormOnDevice(grid_.world()));
  metrics->lr = schedule_.At(step);
  const torch::Tensor skip = guard_->SkipOnDevice(loss_sum, grad_norm);
  // Clipping as the host computed it: grad_clip / (norm + 1e-6) above grad_clip, in fp64.
  torch::Tensor scale = torch::ones_like(grad_norm);
  if (t.grad_clip > 0) {
    scale = torch::where(grad_norm > t.grad_clip,
                         torch::full_like(grad_norm, t.grad_clip).div(grad_norm + 1e-6), scale);
  }
  checkpoints_->BeforeUpdate();  // an asynchronous save may still be copying the weights
  // FinishBackward waited for the last step's gathers, which write the weights updated here.
  TS_CHECK(!reducer_->ParamsPending()) << "the optimizer would update weights still being gathered";
  optimizer_->StepDeferred(metrics->lr, scale, skip);
  TS_ASSIGN_OR_RETURN(const torch::Tensor signal, checkpoints_->SignalFlag());
  step_figures_ = torch::cat({loss_sum, grad_norm, skip, signal});
  // A skipped update leaves the shards as they were: gathering them again changes nothing.
  // Under zero 1 and 2 the gathers are only started: the next step's forward waits for each
  // unit's weights just before using them, so the later units' gathers overlap the earlier
  // units' compute; anything else that reads the weights first calls WaitParams (FinishStep,
  // the end of Run; the optimizer's FinishBackward).
  return reducer_->StartGatherParams();
}

void Trainer::MeasureStep(int64_t step, Clock::time_point start, bool synchronize, StepMetrics* metrics) {
  // Unsynchronised, a step's time is the host's (its kernels queued), which the device's pace
  // sets once the queue is full; a logged step waits for the device. On a GPU the steps since the
  // last wait partly ran during this one, so a logged step reports their average: the device's
  // true pace over the interval (on the CPU each step's own time is already the device's).
  if (synchronize) HostSync(device_);
  const Clock::time_point now = Clock::now();
  metrics->step_time_s = std::chrono::duration<double>(now - start).count();
  if (synchronize) {
    if (!device_.is_cpu() && unsynced_steps_ > 0 && last_synced_ != Clock::time_point{}) {
      metrics->step_time_s =
          std::chrono::duration<double>(now - last_synced_).count() / (unsynced_steps_ + 1);
    }
    last_synced_ = now;
    unsynced_steps_ = 0;
  } else {
    ++unsynced_steps_;
  }
  if (step == 0) {
    grid_.EndStartup();
    // When each bucket's reduction was issued: with overlap, before backward ended.
    std::string trace;
    for (const parallel::BucketEvent& e : reducer_->last_events()) {
      absl::StrAppend(&trace, trace.empty() ? "" : ", ",
                      absl::StrFormat("#%d %.1f ms", e.bucket, e.issued_ms));
    }
    TS_LOG(DEBUG) << "gradient buckets issued at " << trace << " into a backward of "
                  << absl::StrFormat("%.1f ms", reducer_->last_backward_ms());
  }
  metrics->tokens_per_s =
      static_cast<double>(config_.train.global_batch * config_.train.seq_len) / metrics->step_time_s;
  // MFU per device: the job's FLOP rate over the world's peak.
  metrics->mfu = peak_tflops_ > 0
                     ? flops_per_token_ * metrics->tokens_per_s / (grid_.world_size() * peak_tflops_ * 1e12)
                     : 0;
  metrics->memory_mb = MemoryInUseMb(device_);
}

absl::Status Trainer::SumTiedEmbeddingGrads() {
  parallel::Communicator* group = grid_.embedding();
  if (tied_embedding_copies_.empty() || group == nullptr) return absl::OkStatus();  // a middle stage
  // The first stage's tok_embeddings and the last stage's copy ("output") are one logical
  // tensor: both take the sum of their gradients.
  for (const torch::Tensor& copy : tied_embedding_copies_) {
    torch::Tensor grad = copy.grad();
    if (!grad.defined()) {
      copy.mutable_grad() = torch::zeros_like(copy, copy.options().dtype(torch::kFloat));
      grad = copy.grad();
    }
    TS_RETURN_IF_ERROR(group->AllReduce(grad, parallel::ReduceOp::kSum));
  }
  return absl::OkStatus();
}

absl::Status Trainer::LogPipelineBubble() {
  // The measured bubble: 1 - (compute time summed over the pipeline's ranks) / (pp x the
  // slowest rank's step), the simulator's definition, next to its prediction.
  const parallel::pipeline::PipelineStats& stats = executor_->stats();
  torch::Tensor compute = torch::full({1}, stats.compute_s, ScalarOptions());
  torch::Tensor step_time = torch::full({1}, stats.step_s, ScalarOptions());
  torch::Tensor live = torch::full({1}, static_cast<double>(stats.peak_live), ScalarOptions());
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(compute, parallel::ReduceOp::kSum));
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(step_time, parallel::ReduceOp::kMax));
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(live, parallel::ReduceOp::kMax));
  const double measured = 1.0 - HostRead<double>(compute) / (partition_.pp * HostRead<double>(step_time));
  const auto& predicted = executor_->prediction();
  int64_t predicted_live = 0;
  for (int64_t l : predicted.peak_live) predicted_live = std::max(predicted_live, l);
  if (is_logger()) {
    TS_LOG(INFO) << absl::StrFormat(
        "pipeline %s: bubble %.1f%% measured (%.1f%% predicted); peak live activations %d measured (%d "
        "predicted), rank 0 waited %.3f s of a %.3f s step",
        executor_->schedule().name, 100.0 * measured, 100.0 * predicted.bubble_fraction,
        static_cast<int64_t>(HostRead<double>(live)), predicted_live, stats.wait_s, stats.step_s);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Setup.

absl::Status Trainer::Setup() {
  const TrainConfig& t = config_.train;
  TS_RETURN_IF_ERROR(CheckBatchLayout());
  SetCpuThreads(t.threads, grid_.launch().local_size);
  // Before any product, and before the peak MFU counts fp32 runs against (TF32's or fp32's).
  ApplyTf32Setting(t.allow_tf32, device_);
  kernels::RestrictAttentionKernels(EnumName(config_.model.attention_backend));
  TS_RETURN_IF_ERROR(SetupData());
  TS_ASSIGN_OR_RETURN(metrics_, MetricsSink::Open(config_, is_logger()));
  guard_ = std::make_unique<DivergenceGuard>(t, is_logger());
  TS_RETURN_IF_ERROR(SetupModel());
  optimizer_ = std::make_unique<FlatAdamW>(reducer_->owned(),
                                           AdamWOptions{t.beta1, t.beta2, t.adam_eps, t.weight_decay});
  schedule_ = LrSchedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  TS_RETURN_IF_ERROR(SetupCheckpoints());
  TS_RETURN_IF_ERROR(SetupLoader());
  TS_ASSIGN_OR_RETURN(evaluator_, Evaluator::Create(t, val_stream_, *stage_, grid_, partition_.v, device_));
  if (reducer_->zero() >= 1) evaluator_->set_unit_gatherer(reducer_.get());
  profiler_ = std::make_unique<StepProfiler>(t, grid_.rank(), grid_.world_size(), device_);
  TS_RETURN_IF_ERROR(SetupSampler());
  SetupCudaGraphs();
  flops_per_token_ = TrainingFlopsPerToken(config_.model, t.seq_len);
  const PeakRate peak = PeakTflopsOf(config_, device_);
  peak_tflops_ = peak.tflops;
  peak_basis_ = peak.basis;
  LogSetup();
  return absl::OkStatus();
}

absl::Status Trainer::SetupSampler() {
  // Rank 0 samples from its own model, which must then be the whole model, whole between steps.
  const parallel::ParallelDims dims = grid_.topology().dims();
  std::string why_not;
  if (dims.tp > 1 || dims.pp > 1) {
    why_not = absl::StrCat("rank 0 holds only part of the model (tp = ", dims.tp, ", pp = ", dims.pp, ")");
  } else if (dims.cp > 1) {
    why_not = absl::StrCat(
        "generation attends over one whole sequence, which context parallelism splits (cp = ", dims.cp, ")");
  } else if (reducer_->zero() == 3) {
    why_not = "rank 0 holds only its shard of the parameters between steps (parallel.zero = 3)";
  }
  TS_ASSIGN_OR_RETURN(sampler_, SamplePrinter::Create(config_, is_logger(), why_not.empty(), why_not));
  return absl::OkStatus();
}

void Trainer::SetupCudaGraphs() {
  const parallel::ParallelDims dims = grid_.topology().dims();
  cuda_graphs_ =
      DecideCudaGraphs(config_, CudaGraphLayout{device_.is_cuda(), dims.tp, dims.pp, dims.dp, dims.cp});
  if (cuda_graphs_.on) UseStepRecorder(MakeCudaGraphRecorder(device_));
}

void Trainer::UseStepRecorder(std::unique_ptr<StepRecorder> recorder) {
  if (!recorder) return;  // LibTorch without CUDA: no device could have allowed graphs
  const int64_t micro_batch = config_.train.micro_batch;
  micro_graph_ = std::make_unique<MicroStepGraph>(stage_->chunks().front(), micro_batch,
                                                  local_batch_ / micro_batch, device_, std::move(recorder));
}

absl::Status Trainer::CheckBatchLayout() {
  // The layout's constraints that need the world size (dp may be auto).
  const TrainConfig& t = config_.train;
  const int64_t dp = grid_.topology().dims().dp;
  if (t.global_batch % (t.micro_batch * dp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.global_batch = ", t.global_batch,
        " is not divisible by train.micro_batch x dp = ", t.micro_batch, " x ", dp, " = ", t.micro_batch * dp,
        ": each data-parallel rank needs whole micro-batches of the same count"));
  }
  local_batch_ = t.global_batch / dp;
  return absl::OkStatus();
}

absl::Status Trainer::SetupData() {
  const TrainConfig& t = config_.train;
  data::SampleStreamOptions options;
  options.corpora = CorpusSpecs(config_.data.train);
  options.seq_len = t.seq_len;
  options.seed = static_cast<uint64_t>(t.seed);
  options.shuffle = config_.data.shuffle;
  options.vocab_size = config_.model.vocab_size;
  auto stream = data::SampleStream::Open(options);
  if (!stream.ok()) return Annotate(stream.status(), "data.train: ");
  train_stream_ = *std::move(stream);
  const DataConfig& d = config_.data;
  if (d.document_mask || d.reset_position_ids) {
    TS_RETURN_IF_ERROR(data::CheckEndOfDocumentToken(
        *train_stream_, d.eod_token, d.document_mask ? "data.document_mask" : "data.reset_position_ids"));
  }
  if (t.eval_every > 0) {
    options.corpora = CorpusSpecs(config_.data.val);
    options.shuffle = false;  // every evaluation reads the same samples
    auto val = data::SampleStream::Open(options);
    if (!val.ok()) return Annotate(val.status(), "data.val: ");
    val_stream_ = *std::move(val);
  }
  return absl::OkStatus();
}

absl::Status Trainer::SetupModel() {
  const TrainConfig& t = config_.train;
  const ParallelConfig& pc = config_.parallel;
  const parallel::ParallelDims dims = grid_.topology().dims();
  const int64_t microbatches = local_batch_ / t.micro_batch;
  TS_ASSIGN_OR_RETURN(partition_,
                      PlanPartition(config_.model, t.seq_len, dims.pp, pc.virtual_stages, pc.pp_layers));
  TS_ASSIGN_OR_RETURN(parallel::pipeline::Schedule schedule, TrainingSchedule(microbatches));
  TS_ASSIGN_OR_RETURN(std::vector<Transformer> chunks, BuildChunks());
  TS_RETURN_IF_ERROR(SetupReducer(chunks));
  stage_ =
      std::make_unique<ModelPipelineStage>(std::move(chunks), t.micro_batch, t.seq_len, config_.model.dim,
                                           sequence_parallel() ? static_cast<int>(dims.tp) : 1, device_,
                                           [this](int chunk) { reducer_->MarkFinalBackward(chunk); });
  const DataConfig& d = config_.data;
  stage_->SetDocuments(d.eod_token, d.document_mask, d.reset_position_ids);
  TS_ASSIGN_OR_RETURN(executor_, parallel::pipeline::PipelineExecutor::Create(
                                     std::move(schedule), grid_.pp(), *stage_, device_,
                                     parallel::pipeline::ExecutorOptions{/*synchronize_timing=*/false}));
  if (dims.pp > 1 && grid_.rank() == 0) {
    TS_LOG(INFO) << "pipeline: schedule " << executor_->schedule().name << ", " << microbatches
                 << " micro-batches, predicted bubble "
                 << absl::StrFormat("%.1f%%", 100.0 * executor_->prediction().bubble_fraction)
                 << "; stages (cost in FLOPs per token):\n"
                 << partition_.ToString(PipelineStageCosts(config_.model, t.seq_len));
  }
  return absl::OkStatus();
}

absl::StatusOr<parallel::pipeline::Schedule> Trainer::TrainingSchedule(int64_t microbatches) const {
  const ParallelConfig& pc = config_.parallel;
  const int64_t pp = grid_.topology().dims().pp;
  if (pc.pp_schedule.kind != PipelineScheduleKind::kFile) {
    const std::string name = pc.pp_schedule.Text();
    auto made = parallel::pipeline::MakeSchedule(name, pp, microbatches, pc.virtual_stages);
    if (!made.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.pp_schedule = ", name, ": ", made.status().message()));
    }
    return made;
  }
  const std::string& path = pc.pp_schedule.file;
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp_schedule = '", path,
                                                   "': not gpipe, 1f1b, interleaved or zb-h1, and not a "
                                                   "readable schedule file: ",
                                                   text.status().message()));
  }
  auto parsed = parallel::pipeline::ParseSchedule(*text);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
  if (parsed->pp != pp || parsed->v != pc.virtual_stages || parsed->microbatches != microbatches) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the schedule is for pp ", parsed->pp, ", ",
                                                   parsed->v, " virtual stage(s), ", parsed->microbatches,
                                                   " micro-batches; this run has pp ", pp, ", ",
                                                   pc.virtual_stages, ", ", microbatches));
  }
  return parsed;
}

absl::StatusOr<std::vector<Transformer>> Trainer::BuildChunks() const {
  const TrainConfig& t = config_.train;
  const ModelConfig& m = config_.model;
  parallel::Communicator* tp = grid_.topology().dims().tp > 1 ? &grid_.tp() : nullptr;
  std::vector<Transformer> chunks;
  for (ModelShardOptions shard : ChunkShardOptions(partition_, grid_.coords().pp, tp, sequence_parallel())) {
    shard.cp = grid_.topology().dims().cp > 1 ? &grid_.cp() : nullptr;
    TS_RETURN_IF_ERROR(ValidateShardOptions(m, t.seq_len, shard));
    Transformer chunk(m, t.seq_len, shard);
    chunk->to(device_);
    chunk->InitializeWeights(static_cast<uint64_t>(t.seed));
    chunk->SetComputeDtype(ComputeDtype(t.precision));
    chunk->SetZLoss(t.z_loss);
    chunks.push_back(chunk);
  }
  return chunks;
}

absl::Status Trainer::SetupReducer(const std::vector<Transformer>& chunks) {
  const parallel::ParallelDims dims = grid_.topology().dims();
  std::vector<std::vector<ParameterInfo>> infos;
  for (const Transformer& chunk : chunks) infos.push_back(chunk->ParameterInfos());
  const ShardingContext context{dims.tp, dims.pp, sequence_parallel(),
                                config_.train.decay_norms_and_embeddings};
  // Parameters in order of use in the forward pass (the reducer buckets them in reverse).
  std::vector<parallel::DataParallelParameter> params;
  for (const PlannedParameter& p : PlanParameters(infos, config_.model, context)) {
    params.push_back({p.info.name, p.info.tensor, p.role.decay, p.role.norm_weight, p.role.late, p.chunk,
                      p.unit, p.fuse_with_next});
    rank_params_.infos.push_back(p.info);
    if (p.role.tied_across_stages) tied_embedding_copies_.push_back(p.info.tensor);
  }
  parallel::DataParallelOptions options;
  options.zero = static_cast<int>(config_.parallel.zero);
  options.bucket_mb = config_.parallel.bucket_mb;
  options.prefetch = static_cast<int>(config_.parallel.zero3_prefetch);
  // bf16: the model's weights become bf16, with fp32 gradients and an fp32 master in the optimizer.
  options.param_dtype = config_.train.precision == Precision::kBf16 ? at::kBFloat16 : at::kFloat;
  // Context-parallel ranks hold the same parameters as data-parallel ones: gradients are reduced
  // and ZeRO shards over dp x cp.
  TS_ASSIGN_OR_RETURN(reducer_, parallel::GradReducer::Create(std::move(params), grid_.dp_cp(), options));
  // Zero 3: the parameters are sharded from here on; the chunks gather each unit on use. Zero 1
  // and 2: the chunks wait for each unit's share of the updated weights' all-gather on use.
  if (options.zero >= 1) {
    for (Transformer chunk : chunks) chunk->SetUnitGatherer(reducer_.get());  // a handle: same module
  }
  if (options.zero == 3) {
    // The head reads the embedding's unit when both are on this rank and tied (as the planner).
    bool embedding = false, head = false;
    for (const Transformer& chunk : chunks) {
      embedding = embedding || chunk->shard_options().has_embedding;
      head = head || chunk->shard_options().has_head;
    }
    gathered_bound_ = reducer_->GatheredUnitBound(config_.model.tie_embeddings && embedding && head);
  }
  return absl::OkStatus();
}

absl::Status Trainer::SetupCheckpoints() {
  CheckpointedParts parts{&rank_params_, reducer_.get(), optimizer_.get(),
                          guard_.get(),  nullptr,        partition_.v};
  TS_ASSIGN_OR_RETURN(checkpoints_, CheckpointPolicy::Create(config_, grid_, device_, parts));
  TS_ASSIGN_OR_RETURN(const ResumePoint resumed, checkpoints_->Resume(*train_stream_));
  start_step_ = resumed.step;
  start_sample_ = resumed.sample;
  return absl::OkStatus();
}

absl::Status Trainer::SetupLoader() {
  data::LoaderOptions lo;
  lo.global_batch = config_.train.global_batch;
  lo.dp_rank = grid_.coords().dp;
  lo.dp_size = grid_.topology().dims().dp;
  lo.start_sample = start_sample_;
  lo.prefetch = static_cast<int>(config_.data.prefetch);
  TS_ASSIGN_OR_RETURN(loader_, data::Loader::Create(train_stream_, lo));
  checkpoints_->set_loader(loader_.get());
  return absl::OkStatus();
}

namespace {

// The start-up line of data.document_mask and data.reset_position_ids.
std::string DescribeDocuments(const DataConfig& d, const torch::Device& device) {
  const char* attention = !d.document_mask  ? "attention across documents"
                          : device.is_cpu() ? "attention within each document, one SDPA call per document"
                                            : "attention within each document, a boolean mask";
  return absl::StrCat("packed documents (end-of-document token ", d.eod_token, "): ", attention,
                      d.reset_position_ids ? ", rotary positions restart at each document" : "");
}

std::string DescribeContextParallel(int64_t seq_len, parallel::ProcessGrid& grid) {
  const int64_t cp = grid.topology().dims().cp;
  return absl::StrCat(
      "context parallel: cp ", cp, ", each rank holds 2 chunks of ", seq_len / (2 * cp), " tokens of every ",
      seq_len,
      "-token sequence (chunks i and 2 cp - 1 - i); keys and values all-gathered per layer and "
      "attended with a mask per chunk; gradients averaged over dp x cp = ",
      grid.dp_cp().size(), " ranks");
}

}  // namespace

void Trainer::LogSetup() const {
  const TrainConfig& t = config_.train;
  const ModelConfig& m = config_.model;
  TS_LOG(INFO) << "device " << device_.str() << ", " << at::get_num_threads() << " threads, precision "
               << EnumName(t.precision);
  if (device_.is_cpu() && t.precision == Precision::kBf16) {
    TS_LOG(INFO) << "bf16 matrix products: " << kernels::DescribeCpuBf16MatmulPath();
  }
  if (is_logger()) {
    // The heads one rank attends with: query heads split over tp, kv heads too, or one each
    // where tp exceeds their count (replicated).
    const int64_t tp = grid_.topology().dims().tp;
    if (device_.is_cuda()) TS_LOG(INFO) << "CUDA kernels: " << kernels::DescribeCudaKernels();
    TS_LOG(INFO) << "attention: "
                 << kernels::DescribeAttention(m.n_heads / tp, std::max<int64_t>(1, m.n_kv_heads / tp),
                                               t.seq_len, m.head_dim(), device_, ComputeDtype(t.precision));
    const DataConfig& d = config_.data;
    if (d.document_mask || d.reset_position_ids) TS_LOG(INFO) << DescribeDocuments(d, device_);
    if (grid_.topology().dims().cp > 1) TS_LOG(INFO) << DescribeContextParallel(t.seq_len, grid_);
  }
  int64_t local_parameters = 0;
  for (const ParameterInfo& info : rank_params_.infos) local_parameters += info.tensor.numel();
  if (is_logger()) {
    TS_LOG(INFO) << "model: " << Millions(ParameterCount(m)) << " parameters (" << Millions(local_parameters)
                 << " on rank 0), " << m.n_layers << " layers, dim " << m.dim << ", heads " << m.n_heads
                 << " (kv " << m.n_kv_heads << ", head_dim " << m.head_dim() << "), ffn " << m.ffn_dim
                 << ", vocab " << m.vocab_size << (m.tie_embeddings ? " (tied head)" : "")
                 << (m.rope_scaling == RopeScaling::kNone
                         ? std::string()
                         : absl::StrCat(", rope scaling ", EnumName(m.rope_scaling), " x", m.rope_factor));
    for (int d = 0; d < train_stream_->num_corpora(); ++d) {
      const data::DocumentCorpus& c = train_stream_->corpus(d);
      TS_LOG(INFO) << "data: " << c.name() << ": " << c.num_documents() << " documents, " << c.num_tokens()
                   << " tokens, weight " << absl::StrFormat("%.3f", train_stream_->realized_weights()[d]);
    }
    if (val_stream_) {
      for (int d = 0; d < val_stream_->num_corpora(); ++d) {
        TS_LOG(INFO) << "held-out: " << val_stream_->corpus(d).name() << ": "
                     << val_stream_->corpus(d).num_tokens() << " tokens";
      }
    }
    TS_LOG(INFO) << "batch: " << t.global_batch << " x " << t.seq_len << " tokens per step; " << local_batch_
                 << " sequences per data-parallel rank in " << local_batch_ / t.micro_batch
                 << " micro-batch(es) of " << t.micro_batch;
    TS_LOG(INFO) << absl::StrFormat("MFU basis: %.3g FLOP/token, peak %.3g TFLOP/s per rank (%s)",
                                    flops_per_token_, peak_tflops_, peak_basis_);
    if (device_.is_cuda() && t.peak_tflops == 0) {
      // Beside the data sheet, what a plain product reaches on this card now: MFU's ceiling here.
      const PeakRate measured = MeasureCudaMatmulPeak(device_, ComputeDtype(t.precision), 1.0);
      TS_LOG(INFO) << absl::StrFormat("GEMM probe: %.4g TFLOP/s (%s), %.0f%% of the data sheet's %.4g",
                                      measured.tflops, measured.basis, 100.0 * measured.tflops / peak_tflops_,
                                      peak_tflops_);
    }
    if (cuda_graphs_.log) TS_LOG(INFO) << cuda_graphs_.LogLine();
    TS_LOG(INFO) << "run directory: " << t.run_dir;
  }
  // Per rank: what the sharded optimizer leaves here (ZeRO's figures, printed by every rank). The
  // static bytes are those of the tensors themselves (flat buffers, padding included), which is
  // what `tessera validate` predicts.
  const int64_t weights = reducer_->ParamBytes(), master = reducer_->MasterBytes();
  const int64_t moments = optimizer_->StateBytes(), grads = reducer_->PersistentGradBytes();
  TS_LOG(INFO) << "this rank holds " << local_parameters << " parameters (" << reducer_->flat_numel()
               << " flat elements with bucket padding); static memory: weights " << Mib(weights) << " ("
               << (reducer_->has_master() ? "bf16" : "fp32") << "), fp32 master " << Mib(master)
               << ", moments " << Mib(moments) << ", gradients " << Mib(grads) << ": total "
               << Mib(weights + master + moments + grads);
  TS_LOG(INFO) << "data parallel: " << reducer_->num_buckets()
               << " gradient bucket(s) of <= " << config_.parallel.bucket_mb << " MiB, zero "
               << reducer_->zero() << "; optimizer state " << Mib(master + moments) << ", gradients "
               << Mib(grads) << " on this rank";
  if (reducer_->zero() == 3) {
    TS_LOG(INFO) << "zero 3: units gathered on use, up to " << Mib(gathered_bound_)
                 << " at once (the unit in use, " << config_.parallel.zero3_prefetch
                 << " prefetched, one awaiting release"
                 << (config_.model.tie_embeddings ? ", the tied embedding" : "")
                 << "), on top of the static memory";
  }
  if (reducer_->zero() > 0 && grid_.dp_cp().size() == 1 && is_logger()) {
    TS_LOG(INFO) << "parallel.zero = " << reducer_->zero() << " with dp x cp = 1 shards nothing (a no-op)";
  }
}

}  // namespace tessera
