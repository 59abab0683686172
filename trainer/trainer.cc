// Training loop. Each step: this rank reads its slice of the global batch (global_batch / dp
// rows) from the prefetching loader and runs it in micro-batches of train.micro_batch, each loss
// scaled by 1/micro_steps so that the sum is this rank's mean; the gradient reducer averages over
// the data-parallel group in buckets as backward produces them (on the last micro-step), then
// the global gradient norm, clipping, and AdamW on this rank's ranges (its ZeRO shard), and under
// ZeRO the updated shards are all-gathered.
#include "trainer/trainer.h"

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "data/batch_tensors.h"
#include "model/flops.h"
#include "trainer/metrics_tensorboard.h"

namespace tessera {
namespace {

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name, int device_index) {
  const int index = std::max(0, device_index);
  if (name == "cpu") return torch::Device(torch::kCPU);
  const bool cuda = torch::cuda::is_available();
  if (name == "cuda") {
    if (!cuda) {
      return absl::FailedPreconditionError(
          "train.device = cuda, but no CUDA device is usable (this LibTorch build or machine "
          "has none); use train.device: auto or cpu");
    }
    return torch::Device(torch::kCUDA, index);
  }
  return cuda ? torch::Device(torch::kCUDA, index) : torch::Device(torch::kCPU);
}

std::string Millions(int64_t n) { return absl::StrFormat("%.2fM", static_cast<double>(n) / 1e6); }
std::string Mib(int64_t bytes) {
  return absl::StrFormat("%.1f MiB (%d bytes)", static_cast<double>(bytes) / 1048576.0, bytes);
}

double RecentMean(const std::deque<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

std::vector<data::CorpusSpec> CorpusSpecs(const std::vector<CorpusEntry>& entries) {
  std::vector<data::CorpusSpec> specs;
  for (const CorpusEntry& e : entries) specs.push_back({e.prefix, e.weight});
  return specs;
}

}  // namespace

std::string ResolvedDeviceKind(const std::string& train_device) {
  if (train_device != "auto") return train_device;
  return torch::cuda::is_available() ? "cuda" : "cpu";
}

absl::Status AllRanksOk(parallel::ProcessGrid& grid, const absl::Status& mine) {
  if (grid.world_size() == 1) return mine;
  // On the communicators' device (NCCL carries CUDA tensors only).
  const torch::Device device = grid.device_index() >= 0 ? torch::Device(torch::kCUDA, grid.device_index())
                                                        : torch::Device(torch::kCPU);
  torch::Tensor failed = torch::full({1}, mine.ok() ? 0.0 : 1.0, torch::TensorOptions().device(device));
  TS_RETURN_IF_ERROR(grid.world().AllReduce(failed, parallel::ReduceOp::kSum));
  if (!mine.ok()) return mine;
  const int count = static_cast<int>(failed.item<float>());
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

absl::Status Trainer::SetupData() {
  const TrainConfig& t = config_.train;
  data::SampleStreamOptions options;
  options.corpora = CorpusSpecs(config_.data.train);
  options.seq_len = t.seq_len;
  options.seed = static_cast<uint64_t>(t.seed);
  options.shuffle = config_.data.shuffle;
  options.vocab_size = config_.model.vocab_size;
  auto stream = data::SampleStream::Open(options);
  if (!stream.ok()) {
    return Annotate(stream.status(), "data.train: ");
  }
  train_stream_ = *std::move(stream);
  if (t.eval_every > 0) {
    options.corpora = CorpusSpecs(config_.data.val);
    options.shuffle = false;  // every evaluation reads the same samples
    auto val = data::SampleStream::Open(options);
    if (!val.ok())
      return Annotate(val.status(), "data.val: ");
    val_stream_ = *std::move(val);
  }
  return absl::OkStatus();
}

absl::Status Trainer::SetupModel() {
  const TrainConfig& t = config_.train;
  const ModelConfig& m = config_.model;
  const ParallelConfig& pc = config_.parallel;
  const parallel::ParallelDims dims = grid_.topology().dims();
  const int64_t microbatches = local_batch_ / t.micro_batch;
  // Stage costs in FLOPs per token (forward + backward): a layer's matrix products and
  // attention, the head's product; the embedding lookup is free.
  parallel::pipeline::StageCosts costs;
  ModelConfig one_layer = m;
  one_layer.n_layers = 1;
  costs.layer = 6.0 * (MatmulParameterCount(one_layer) - m.vocab_size * m.dim) + 12.0 * t.seq_len * m.dim;
  costs.head = 6.0 * m.vocab_size * m.dim;
  costs.embedding = 0;
  if (pc.pp_layers.empty()) {
    TS_ASSIGN_OR_RETURN(partition_,
                        parallel::pipeline::BalancedPartition(m.n_layers, dims.pp, pc.virtual_stages, costs));
  } else {
    std::vector<int64_t> counts;
    for (const std::string& item : pc.pp_layers) {
      int64_t n;
      if (!absl::SimpleAtoi(item, &n)) {
        return absl::InvalidArgumentError(absl::StrCat("parallel.pp_layers: '", item, "' is not an integer"));
      }
      counts.push_back(n);
    }
    auto explicit_split =
        parallel::pipeline::ExplicitPartition(m.n_layers, dims.pp, pc.virtual_stages, counts);
    if (!explicit_split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.pp_layers: ", explicit_split.status().message()));
    }
    partition_ = *std::move(explicit_split);
  }
  parallel::pipeline::Schedule schedule;
  const std::string& name = pc.pp_schedule;
  if (name == "gpipe" || name == "1f1b" || name == "interleaved" || name == "zb-h1") {
    auto made = parallel::pipeline::MakeSchedule(name, dims.pp, microbatches, pc.virtual_stages);
    if (!made.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.pp_schedule = ", name, ": ", made.status().message()));
    schedule = *std::move(made);
  } else {
    auto text = ReadFileToString(name);
    if (!text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.pp_schedule = '", name,
                       "': not gpipe, 1f1b, interleaved or zb-h1, and not a readable "
                       "schedule file: ",
                       text.status().message()));
    }
    auto parsed = parallel::pipeline::ParseSchedule(*text);
    if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", parsed.status().message()));
    schedule = *std::move(parsed);
    if (schedule.pp != dims.pp || schedule.v != pc.virtual_stages || schedule.microbatches != microbatches) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": the schedule is for pp ", schedule.pp, ", ",
                                                     schedule.v, " virtual stage(s), ", schedule.microbatches,
                                                     " micro-batches; this run has pp ", dims.pp, ", ",
                                                     pc.virtual_stages, ", ", microbatches));
    }
  }

  const torch::ScalarType compute_dtype = t.precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
  const int pp_rank = grid_.coords().pp;
  std::vector<Transformer> chunks;
  ModelShardOptions shard;
  shard.tp = dims.tp > 1 ? &grid_.tp() : nullptr;
  shard.sequence_parallel = pc.sequence_parallel && dims.tp > 1;
  for (int64_t c = 0; c < partition_.v; ++c) {
    shard.first_layer = partition_.FirstLayer(pp_rank, c);
    shard.num_layers = partition_.NumLayers(pp_rank, c);
    shard.has_embedding = partition_.HasEmbedding(pp_rank, c);
    shard.has_head = partition_.HasHead(pp_rank, c);
    TS_RETURN_IF_ERROR(ValidateShardOptions(m, t.seq_len, shard));
    Transformer chunk(m, t.seq_len, shard);
    chunk->to(device_);
    chunk->InitializeWeights(static_cast<uint64_t>(t.seed));
    chunk->SetComputeDtype(compute_dtype);
    chunks.push_back(chunk);
  }

  // Parameters in order of use in the forward pass (the reducer buckets them in reverse), with
  // what the gradient norm and the late fix-up need from their sharding.
  std::vector<parallel::DataParallelParameter> params;
  for (int c = 0; c < static_cast<int>(chunks.size()); ++c) {
    for (const ParameterInfo& info : chunks[c]->ParameterInfos()) {
      const std::string& logical = info.is_tied_copy() ? info.tied_copy_of : info.name;
      const bool embedding_like = logical == "tok_embeddings";
      const bool decay = (info.global_shape.size() >= 2 && !embedding_like) || t.decay_norms_and_embeddings;
      // Each logical element counts once in the norm: a tensor replicated over the TP group is
      // held by tp ranks, a replicated key/value block by `replicas` ranks, a tied copy is the
      // embedding again.
      double norm_weight = 1.0;
      if (info.is_tied_copy()) {
        norm_weight = 0.0;
      } else if (info.shard.dim < 0) {
        norm_weight = 1.0 / dims.tp;
      } else if (info.shard.replicas > 1) {
        norm_weight = 1.0 / info.shard.replicas;
      }
      // Gradients that need a fix-up across another group before the DP reduction: what
      // SyncTensorParallelGrads completes (sequence-parallel norms, replicated kv blocks), and
      // the two copies of tied embeddings on the first and last pipeline stages.
      const bool tied_across_stages =
          m.tie_embeddings && dims.pp > 1 && (info.is_tied_copy() || info.name == "tok_embeddings");
      const bool late =
          (shard.sequence_parallel && info.shard.dim < 0) || info.shard.replicas > 1 || tied_across_stages;
      params.push_back({info.name, info.tensor, decay, norm_weight, late, c});
      rank_params_.infos.push_back(info);
    }
  }
  parallel::DataParallelOptions dp_options;
  dp_options.zero = static_cast<int>(pc.zero);
  dp_options.bucket_mb = pc.bucket_mb;
  TS_ASSIGN_OR_RETURN(reducer_, parallel::GradReducer::Create(std::move(params), grid_.dp(), dp_options));

  stage_ =
      std::make_unique<ModelPipelineStage>(std::move(chunks), t.micro_batch, t.seq_len, m.dim,
                                           shard.sequence_parallel ? static_cast<int>(dims.tp) : 1, device_,
                                           [this](int chunk) { reducer_->MarkFinalBackward(chunk); });
  TS_ASSIGN_OR_RETURN(executor_, parallel::pipeline::PipelineExecutor::Create(
                                     std::move(schedule), grid_.pp(), *stage_, device_,
                                     parallel::pipeline::ExecutorOptions{/*synchronize_timing=*/false}));
  if (dims.pp > 1 && grid_.rank() == 0) {
    TS_LOG(INFO) << "pipeline: schedule " << executor_->schedule().name << ", " << microbatches
                 << " micro-batches, predicted bubble "
                 << absl::StrFormat("%.1f%%", 100.0 * executor_->prediction().bubble_fraction)
                 << "; stages (cost in FLOPs per token):\n"
                 << partition_.ToString(costs);
  }
  return absl::OkStatus();
}

absl::Status Trainer::SetupCheckpoints() {
  const CheckpointConfig& c = config_.checkpoint;
  checkpoint_dir_ = c.dir.empty() ? config_.train.run_dir + "/checkpoints" : c.dir;
  TS_ASSIGN_OR_RETURN(checkpoint_comm_, grid_.world().Split(0, grid_.rank(), "checkpoint"));
  checkpoint::WriterOptions options;
  options.dir = checkpoint_dir_;
  options.keep = static_cast<int>(c.keep);
  options.async = c.async;
  checkpointer_ = std::make_unique<checkpoint::CheckpointWriter>(options, *checkpoint_comm_);

  // Which checkpoint to start from. "auto": rank 0 verifies (checksums included) and chooses the
  // newest valid one, and every rank opens that step.
  std::string step_dir;
  if (c.resume == "auto") {
    torch::Tensor chosen = torch::full({1}, -1.0, ScalarOptions());
    if (grid_.rank() == 0 && PathExists(checkpoint_dir_)) {
      auto found = checkpoint::FindLatestValid(checkpoint_dir_);
      if (found.ok()) {
        chosen.fill_(static_cast<double>(found->step));
        for (const auto& skipped : found->skipped) {
          TS_LOG(WARNING) << "checkpoint " << skipped.path << " skipped: " << skipped.reason.message();
        }
      } else if (found.status().code() != absl::StatusCode::kNotFound) {
        TS_LOG(WARNING) << "no checkpoint resumed from " << checkpoint_dir_ << ": "
                        << found.status().message();
      }
    }
    TS_RETURN_IF_ERROR(grid_.world().Broadcast(chosen, 0));
    const int64_t step = static_cast<int64_t>(chosen.item<double>());
    if (step >= 0) step_dir = checkpoint::StepDirPath(checkpoint_dir_, step);
  } else if (c.resume != "never") {
    auto found = checkpoint::ResolveCheckpoint(c.resume, checkpoint::Verify::kStructure);
    if (!found.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint.resume = '", c.resume, "': ", found.status().message()));
    }
    step_dir = found->path;
  }
  if (step_dir.empty()) return absl::OkStatus();

  const auto load_start = std::chrono::steady_clock::now();
  TS_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(step_dir));
  const checkpoint::Manifest& manifest = reader->manifest();
  bool had_optimizer = false;
  TS_RETURN_IF_ERROR(LoadCheckpoint(*reader, &had_optimizer));
  TS_RETURN_IF_ERROR(grid_.world().Barrier());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  start_sample_ = manifest.consumed_samples;
  if (!manifest.data_position.empty()) {
    auto position = data::DataPosition::Parse(manifest.data_position);
    if (position.ok()) {
      if (absl::Status same = position->CheckStream(*train_stream_); !same.ok() && grid_.rank() == 0) {
        TS_LOG(WARNING) << "resuming at sample " << start_sample_
                        << " of a changed data definition: " << same.message();
      }
    }
  }
  const checkpoint::Layout& l = manifest.layout;
  if (grid_.rank() == 0) {
    TS_LOG(INFO) << "resumed from " << step_dir << " (saved at step " << manifest.step << " with tp " << l.tp
                 << " x pp " << l.pp << " x dp " << l.dp << ", zero " << l.zero << ", " << l.virtual_stages
                 << " virtual stage(s)): continuing at step " << start_step_ + 1 << ", sample "
                 << start_sample_ << (had_optimizer ? "" : "; no optimizer state in it, AdamW starts fresh")
                 << absl::StrFormat(" (loaded in %.3f s)", load_s);
  }
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(const checkpoint::CheckpointReader& reader, bool* had_optimizer) {
  const checkpoint::Manifest& manifest = reader.manifest();
  TS_RETURN_IF_ERROR(CheckCheckpointModel(manifest, config_.model, reader.step_dir()));
  TS_RETURN_IF_ERROR(RestoreState(reader, rank_params_, *reducer_, *optimizer_, had_optimizer));
  LoopState loop;
  loop.step = manifest.step;
  if (auto blob = reader.ReadBlob("loop_state"); blob.ok()) {
    TS_ASSIGN_OR_RETURN(loop, LoopState::Parse(*blob, reader.step_dir() + " loop_state"));
  }
  start_step_ = loop.step;
  skipped_total_ = loop.skipped_total;
  consecutive_skips_ = loop.consecutive_skips;
  recent_losses_ = loop.recent_losses;
  optimizer_->set_step_count(*had_optimizer ? loop.adam_steps : 0);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Trainer::RollBack(int64_t failed_step) {
  TS_RETURN_IF_ERROR(checkpointer_->Wait());
  torch::Tensor chosen = torch::full({1}, -1.0, ScalarOptions());
  if (grid_.rank() == 0 && PathExists(checkpoint_dir_)) {
    if (auto found = checkpoint::FindLatestValid(checkpoint_dir_); found.ok())
      chosen.fill_(static_cast<double>(found->step));
  }
  TS_RETURN_IF_ERROR(grid_.world().Broadcast(chosen, 0));
  const int64_t step = static_cast<int64_t>(chosen.item<double>());
  if (step < 0) {
    return WithExitCode(absl::AbortedError(absl::StrCat("training diverged at step ", failed_step,
                                                        " and there is no checkpoint in ", checkpoint_dir_,
                                                        " to roll back to (set checkpoint.every)")),
                        kExitDiverged);
  }
  const std::string step_dir = checkpoint::StepDirPath(checkpoint_dir_, step);
  TS_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(step_dir));
  const int64_t skipped_before = skipped_total_;
  bool had_optimizer = false;
  TS_RETURN_IF_ERROR(LoadCheckpoint(*reader, &had_optimizer));
  skipped_total_ = std::max(skipped_total_, skipped_before);
  consecutive_skips_ = 0;
  if (is_logger()) {
    TS_LOG(WARNING) << "diverged at step " << failed_step << ": rolled back to " << step_dir << " (step "
                    << step << "); the global batches since then are skipped: training goes on at sample "
                    << loader_->samples_consumed();
  }
  return step;
}

absl::Status Trainer::SaveCheckpoint(int64_t steps_done, bool wait) {
  const auto start = std::chrono::steady_clock::now();
  checkpoint::SaveState state;
  state.step = steps_done;
  state.consumed_samples = loader_->samples_consumed();
  state.data_position = loader_->position().Serialize();
  state.config_yaml = ConfigToYaml(config_);
  const parallel::ParallelDims dims = grid_.topology().dims();
  state.layout = {grid_.world_size(),
                  static_cast<int32_t>(dims.tp),
                  static_cast<int32_t>(dims.pp),
                  static_cast<int32_t>(dims.dp),
                  static_cast<int32_t>(config_.parallel.zero),
                  static_cast<int32_t>(partition_.v)};
  TS_ASSIGN_OR_RETURN(state.tensors, CollectStateSlices(rank_params_, *reducer_, *optimizer_, grid_));
  if (grid_.rank() == 0) {
    LoopState loop;
    loop.step = steps_done;
    loop.skipped_total = skipped_total_;
    loop.consecutive_skips = consecutive_skips_;
    loop.adam_steps = optimizer_->step_count();
    loop.recent_losses = recent_losses_;
    state.blobs.push_back({"loop_state", loop.Serialize()});
  }
  TS_RETURN_IF_ERROR(checkpointer_->Save(std::move(state)));
  if (wait) TS_RETURN_IF_ERROR(checkpointer_->Wait());
  // (The writer logs each commit; an asynchronous save's cost to training is this stall.)
  if (is_logger() && config_.checkpoint.async && !wait) {
    TS_LOG(INFO) << absl::StrFormat(
        "checkpoint of step %d being written in the background (%.3f s stall)", steps_done,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return absl::OkStatus();
}

absl::Status Trainer::Setup() {
  const TrainConfig& t = config_.train;
  const ModelConfig& m = config_.model;
  const parallel::ParallelDims dims = grid_.topology().dims();
  // The layout's constraints that need the world size (dp may be auto).
  if (t.global_batch % (t.micro_batch * dims.dp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.global_batch = ", t.global_batch,
        " is not divisible by train.micro_batch x dp = ", t.micro_batch, " x ", dims.dp, " = ",
        t.micro_batch * dims.dp, ": each data-parallel rank needs whole micro-batches of the same count"));
  }
  local_batch_ = t.global_batch / dims.dp;
  // Threads: the cores of this node shared by its ranks.
  int threads = static_cast<int>(t.threads);
  if (threads <= 0) {
    const int ranks_here = std::max(1, grid_.launch().local_size);
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / ranks_here);
  }
  at::set_num_threads(threads);

  TS_RETURN_IF_ERROR(SetupData());

  if (is_logger()) {
    TS_RETURN_IF_ERROR(MakeDirs(t.run_dir));
    TS_RETURN_IF_ERROR(WriteFileAtomic(t.run_dir + "/config.yaml", ConfigToYaml(config_)));
    metrics_file_.open(t.run_dir + "/metrics.jsonl", std::ios::trunc);
    if (!metrics_file_) {
      return absl::PermissionDeniedError(absl::StrCat("cannot write '", t.run_dir, "/metrics.jsonl'"));
    }
    if (t.tensorboard) {
      TS_ASSIGN_OR_RETURN(tensorboard_, tensorboard::TensorBoardWriter::Open(t.run_dir));
    }
  }
  if (const char* env = std::getenv("TESSERA_FAULT_NAN_GRAD_STEPS")) {
    for (absl::string_view item : absl::StrSplit(env, ',', absl::SkipEmpty())) {
      int64_t step;
      if (absl::SimpleAtoi(item, &step)) fault_nan_steps_.insert(step);
    }
  }

  TS_RETURN_IF_ERROR(SetupModel());
  optimizer_ = std::make_unique<FlatAdamW>(reducer_->owned(),
                                           AdamWOptions{t.beta1, t.beta2, t.adam_eps, t.weight_decay});
  schedule_ = LrSchedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  TS_RETURN_IF_ERROR(SetupCheckpoints());
  data::LoaderOptions lo;
  lo.global_batch = t.global_batch;
  lo.dp_rank = grid_.coords().dp;
  lo.dp_size = dims.dp;
  lo.start_sample = start_sample_;
  lo.prefetch = static_cast<int>(config_.data.prefetch);
  TS_ASSIGN_OR_RETURN(loader_, data::Loader::Create(train_stream_, lo));

  const torch::ScalarType compute_dtype = t.precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
  flops_per_token_ = TrainingFlopsPerToken(m, t.seq_len);
  peak_tflops_ = t.peak_tflops > 0 ? t.peak_tflops : PeakTflops(device_, compute_dtype);

  TS_LOG(INFO) << "device " << device_.str() << ", " << at::get_num_threads() << " threads, precision "
               << t.precision;
  int64_t local_parameters = 0;
  for (Transformer& chunk : stage_->chunks()) {
    for (const auto& p : chunk->parameters()) local_parameters += p.numel();
  }
  if (is_logger()) {
    TS_LOG(INFO) << "model: " << Millions(ParameterCount(m)) << " parameters (" << Millions(local_parameters)
                 << " on rank 0), " << m.n_layers << " layers, dim " << m.dim << ", heads " << m.n_heads
                 << " (kv " << m.n_kv_heads << "), ffn " << m.ffn_dim << ", vocab " << m.vocab_size
                 << (m.tie_embeddings ? " (tied head)" : "");
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
    TS_LOG(INFO) << absl::StrFormat("MFU basis: %.3g FLOP/token, peak %.3g TFLOP/s per rank",
                                    flops_per_token_, peak_tflops_);
    TS_LOG(INFO) << "run directory: " << t.run_dir;
  }
  // Per rank: what the sharded optimizer leaves here (ZeRO's figures, printed by every rank).
  TS_LOG(INFO) << "this rank holds " << local_parameters << " parameters ("
               << Mib(local_parameters * static_cast<int64_t>(sizeof(float))) << " of fp32 weights)";
  TS_LOG(INFO) << "data parallel: " << reducer_->num_buckets()
               << " gradient bucket(s) of <= " << config_.parallel.bucket_mb << " MiB, zero "
               << reducer_->zero() << "; optimizer state " << Mib(optimizer_->StateBytes()) << ", gradients "
               << Mib(reducer_->PersistentGradBytes()) << " on this rank";
  if (reducer_->zero() > 0 && dims.dp == 1 && is_logger()) {
    TS_LOG(INFO) << "parallel.zero = " << reducer_->zero() << " with dp = 1 shards nothing (a no-op)";
  }
  return absl::OkStatus();
}

absl::Status Trainer::TrainStep(int64_t step, StepMetrics* metrics) {
  const TrainConfig& t = config_.train;
  TS_ASSIGN_OR_RETURN(data::LocalBatch batch, loader_->Next());
  metrics->data_wait_s = loader_->last_wait_seconds();
  reducer_->ZeroGrad();
  stage_->SetBatch(&batch, local_batch_ / t.micro_batch);
  // The schedule's forwards and backwards; the reducer's hooks reduce buckets as the last
  // backward of each chunk completes them.
  absl::StatusOr<double> loss = executor_->RunStep();
  stage_->SetBatch(nullptr, 1);
  if (!loss.ok()) return loss.status();
  TS_RETURN_IF_ERROR(reducer_->FinishBackward([this]() -> absl::Status {
    for (Transformer& chunk : stage_->chunks()) TS_RETURN_IF_ERROR(chunk->SyncTensorParallelGrads());
    return SumTiedEmbeddingGrads();
  }));
  // The step's loss: the last stage holds it; the mean over the global batch is the DP-average.
  torch::Tensor loss_sum = torch::full({1}, *loss, ScalarOptions());
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(loss_sum, parallel::ReduceOp::kSum));
  TS_RETURN_IF_ERROR(grid_.dp().AllReduce(loss_sum, parallel::ReduceOp::kAvg));
  metrics->loss = loss_sum.item<double>();
  if (fault_nan_steps_.erase(step + 1)) {  // once per step number (a rollback re-runs steps)
    torch::NoGradGuard no_grad;
    for (const parallel::OwnedRange& r : reducer_->owned()) r.grads.fill_(std::nan(""));
  }
  TS_ASSIGN_OR_RETURN(metrics->grad_norm, reducer_->GlobalGradNorm(grid_.world()));
  metrics->lr = schedule_.At(step);
  if (ShouldSkipUpdate(metrics->loss, metrics->grad_norm)) {
    ++consecutive_skips_;
    metrics->skipped_steps = ++skipped_total_;
    if (is_logger())
      TS_LOG(WARNING) << absl::StrFormat(
          "step %d: update skipped (loss %g, grad_norm %g%s); %d in a row", step + 1, metrics->loss,
          metrics->grad_norm,
          recent_losses_.empty() ? "" : absl::StrFormat(", running mean %g", RecentMean(recent_losses_)),
          consecutive_skips_);
    return absl::OkStatus();
  }
  consecutive_skips_ = 0;
  metrics->skipped_steps = skipped_total_;
  recent_losses_.push_back(metrics->loss);
  if (recent_losses_.size() > 50) recent_losses_.pop_front();
  double scale = 1.0;
  if (t.grad_clip > 0 && metrics->grad_norm > t.grad_clip) scale = t.grad_clip / (metrics->grad_norm + 1e-6);
  optimizer_->Step(metrics->lr, scale);
  return reducer_->GatherParams();
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
  const double measured = 1.0 - compute.item<double>() / (partition_.pp * step_time.item<double>());
  const auto& predicted = executor_->prediction();
  int64_t predicted_live = 0;
  for (int64_t l : predicted.peak_live) predicted_live = std::max(predicted_live, l);
  if (is_logger()) {
    TS_LOG(INFO) << absl::StrFormat(
        "pipeline %s: bubble %.1f%% measured (%.1f%% predicted); peak live activations %d measured (%d "
        "predicted), rank 0 waited %.3f s of a %.3f s step",
        executor_->schedule().name, 100.0 * measured, 100.0 * predicted.bubble_fraction,
        static_cast<int64_t>(live.item<double>()), predicted_live, stats.wait_s, stats.step_s);
  }
  return absl::OkStatus();
}

bool Trainer::ShouldSkipUpdate(double loss, double grad_norm) const {
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) return true;
  const double factor = config_.train.spike_factor;
  return factor > 0 && recent_losses_.size() >= 10 && loss > factor * RecentMean(recent_losses_);
}

absl::Status Trainer::SumTiedEmbeddingGrads() {
  if (!config_.model.tie_embeddings || grid_.topology().dims().pp == 1) return absl::OkStatus();
  parallel::Communicator* group = grid_.embedding();
  if (group == nullptr) return absl::OkStatus();  // a middle stage
  // The first stage's tok_embeddings and the last stage's copy ("output") are one logical
  // tensor: both take the sum of their gradients.
  for (Transformer& chunk : stage_->chunks()) {
    for (const ParameterInfo& info : chunk->ParameterInfos()) {
      if (info.name == "tok_embeddings" || info.is_tied_copy()) {
        torch::Tensor grad = info.tensor.grad();
        if (!grad.defined()) {
          info.tensor.mutable_grad() = torch::zeros_like(info.tensor);
          grad = info.tensor.grad();
        }
        TS_RETURN_IF_ERROR(group->AllReduce(grad, parallel::ReduceOp::kSum));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::EvalMicroBatch(const data::LocalBatch& batch) {
  // Model chunks in model order; every rank walks the same order and acts on its own chunks, so
  // each send meets its receive (a chain, no cycle).
  const int pp = partition_.pp, pp_rank = grid_.coords().pp;
  const int chunks = static_cast<int>(partition_.pp * partition_.v);
  const int64_t sp = stage_->ActivationShape(0)[1];
  torch::Tensor activation;
  double loss = 0;
  data::Batch micro = data::ToTrainingBatch(batch, 0, batch.rows);
  for (int k = 0; k < chunks; ++k) {
    const int owner = static_cast<int>(parallel::pipeline::RankOfModelChunk(k, pp));
    if (owner != pp_rank) continue;
    Transformer& model = stage_->chunks()[parallel::pipeline::LocalChunkOf(k, pp)];
    if (k > 0) {
      const int from = static_cast<int>(parallel::pipeline::RankOfModelChunk(k - 1, pp));
      if (from != pp_rank) {
        activation =
            torch::empty({batch.rows, sp, config_.model.dim}, torch::TensorOptions().device(device_));
        TS_RETURN_IF_ERROR(grid_.pp().Recv(activation, from));
      }
    }
    torch::Tensor x = k == 0 ? micro.inputs.to(device_) : activation;
    if (k == chunks - 1) {
      loss = model->StageLoss(x, micro.targets.to(device_)).item<double>();
    } else {
      activation = model->StageForward(x).contiguous();
      const int to = static_cast<int>(parallel::pipeline::RankOfModelChunk(k + 1, pp));
      if (to != pp_rank) TS_RETURN_IF_ERROR(grid_.pp().Send(activation, to));
    }
  }
  return loss;
}

absl::StatusOr<double> Trainer::Evaluate() {
  if (!val_stream_) return std::nan("");
  torch::NoGradGuard no_grad;
  const TrainConfig& t = config_.train;
  const int dp = grid_.topology().dims().dp, dp_rank = grid_.coords().dp;
  const int64_t sample_tokens = val_stream_->sample_tokens();
  double sum = 0;
  // Micro-batch b holds held-out samples [b * micro_batch, (b + 1) * micro_batch); the DP ranks
  // take turns, so the figure is the same for every layout.
  for (int64_t b = dp_rank; b < t.eval_batches; b += dp) {
    data::LocalBatch batch;
    batch.first_sample = b * t.micro_batch;
    batch.rows = t.micro_batch;
    batch.sample_tokens = sample_tokens;
    batch.tokens.resize(static_cast<size_t>(t.micro_batch * sample_tokens));
    for (int64_t r = 0; r < t.micro_batch; ++r) {
      TS_RETURN_IF_ERROR(val_stream_->Read(batch.first_sample + r, batch.tokens.data() + r * sample_tokens));
    }
    TS_ASSIGN_OR_RETURN(double loss, EvalMicroBatch(batch));
    sum += loss;
  }
  torch::Tensor total = torch::full({1}, sum, ScalarOptions());
  TS_RETURN_IF_ERROR(grid_.pp().AllReduce(total, parallel::ReduceOp::kSum));  // the last stage holds it
  TS_RETURN_IF_ERROR(grid_.dp().AllReduce(total, parallel::ReduceOp::kSum));
  return total.item<double>() / static_cast<double>(t.eval_batches);
}

absl::Status Trainer::Run() {
  const TrainConfig& t = config_.train;
  const double tokens_per_step = static_cast<double>(t.global_batch * t.seq_len);
  const int world = grid_.world_size();
  if (start_step_ >= t.steps && is_logger()) {
    TS_LOG(INFO) << "the checkpoint is at step " << start_step_ << " of train.steps = " << t.steps
                 << ": nothing to do";
  }
  for (int64_t step = start_step_; step < t.steps; ++step) {
    StepMetrics metrics;
    metrics.step = step + 1;
    metrics.total_steps = t.steps;
    auto start = std::chrono::steady_clock::now();
    if (step + 1 == t.profile_step) {
      const std::string trace =
          absl::StrCat(t.run_dir, "/profile_step_", step + 1,
                       world > 1 ? absl::StrFormat("_rank%05d", grid_.rank()) : "", ".json");
      absl::Status status;
      {
        torch::autograd::profiler::RecordProfile profile(trace);
        status = TrainStep(step, &metrics);
      }
      TS_RETURN_IF_ERROR(status);
      TS_LOG(INFO) << "profile of step " << step + 1 << " written to " << trace;
    } else {
      absl::Status status = TrainStep(step, &metrics);
      if (!status.ok()) {
        const std::string message(status.message());
        if (message.find("out of memory") != std::string::npos ||
            message.find("bad_alloc") != std::string::npos) {
          return WithExitCode(status, kExitOutOfMemory);
        }
        return status;
      }
    }
    if (device_.is_cuda()) torch::cuda::synchronize();
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
    metrics.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.tokens_per_s = tokens_per_step / metrics.step_time_s;
    // MFU per device: the job's FLOP rate over the world's peak.
    metrics.mfu =
        peak_tflops_ > 0 ? flops_per_token_ * metrics.tokens_per_s / (world * peak_tflops_ * 1e12) : 0;
    metrics.memory_mb = MemoryInUseMb(device_);
    if (consecutive_skips_ > t.max_skips && t.on_divergence == "rollback" && rollbacks_ < kMaxRollbacks) {
      if (is_logger()) metrics_file_ << MetricsJsonLine(metrics) << std::flush;
      ++rollbacks_;
      TS_ASSIGN_OR_RETURN(const int64_t resumed, RollBack(step + 1));
      step = resumed - 1;  // the loop's ++step continues after the checkpoint's step
      continue;
    }
    if (consecutive_skips_ > t.max_skips) {
      if (is_logger()) metrics_file_ << MetricsJsonLine(metrics) << std::flush;
      return WithExitCode(
          absl::AbortedError(absl::StrFormat(
              "training diverged: %d updates in a row skipped (last loss %g, grad_norm %g; train.max_skips = "
              "%d): "
              "lower train.lr (now %g), raise train.warmup_steps, or check the data around sample %d",
              consecutive_skips_, metrics.loss, metrics.grad_norm, t.max_skips, t.lr,
              loader_->samples_consumed() - t.global_batch)),
          kExitDiverged);
    }
    const bool last = step + 1 == t.steps;
    if (t.eval_every > 0 && val_stream_ && ((step + 1) % t.eval_every == 0 || last)) {
      TS_ASSIGN_OR_RETURN(double eval_loss, Evaluate());
      metrics.eval_loss = eval_loss;
    }
    history_.push_back(metrics);
    if (is_logger() && ((step + 1) % t.log_every == 0 || last || step == 0 || metrics.eval_loss)) {
      metrics_file_ << MetricsJsonLine(metrics) << std::flush;
      TS_LOG(INFO) << MetricsConsoleLine(metrics);
      if (tensorboard_) TS_RETURN_IF_ERROR(WriteStepScalars(*tensorboard_, metrics));
    }
    if (partition_.pp > 1 && ((step + 1) % t.log_every == 0 || last)) {
      TS_RETURN_IF_ERROR(LogPipelineBubble());
    }
    // Preemption: every rank learns of a signal any rank got (Slurm signals them all, but not at
    // the same instant), so all save the same step and leave together.
    torch::Tensor signal =
        torch::full({1}, static_cast<double>(parallel::ProcessGrid::PendingSignal()), ScalarOptions());
    TS_RETURN_IF_ERROR(grid_.world().AllReduce(signal, parallel::ReduceOp::kMax));
    if (const int sig = static_cast<int>(signal.item<double>()); sig != 0) {
      TS_RETURN_IF_ERROR(SaveCheckpoint(step + 1, /*wait=*/true));
      return WithExitCode(absl::AbortedError(absl::StrCat("stopped by signal ", sig, " after step ", step + 1,
                                                          "; checkpoint saved in ", checkpoint_dir_,
                                                          ": run the same command again to resume")),
                          kExitPreempted);
    }
    const int64_t every = config_.checkpoint.every;
    if ((every > 0 && (step + 1) % every == 0) || (last && config_.checkpoint.at_end)) {
      TS_RETURN_IF_ERROR(SaveCheckpoint(step + 1, /*wait=*/last));
    }
  }
  if (tensorboard_) TS_RETURN_IF_ERROR(tensorboard_->Flush());
  TS_LOG(INFO) << absl::StrFormat("peak memory on this rank: %.1f MiB", PeakMemoryMb(device_));
  return checkpointer_->Wait();
}

}  // namespace tessera
