// Training loop. Each step: zero the flat gradient buffer, run global_batch / micro_batch
// micro-steps (each loss scaled by 1/micro_steps so the sum is the batch mean), take the global
// gradient norm, clip, and apply AdamW at the scheduled learning rate.
#include "trainer/trainer.h"

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "data/byte_tokenizer.h"
#include "trainer/flops.h"

namespace tessera {
namespace {

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  const bool cuda = torch::cuda::is_available();
  if (name == "cuda") {
    if (!cuda) {
      return absl::FailedPreconditionError(
          "train.device = cuda, but no CUDA device is usable (this LibTorch build or machine "
          "has none); use train.device: auto or cpu");
    }
    return torch::Device(torch::kCUDA, 0);
  }
  return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

std::string Millions(int64_t n) { return absl::StrFormat("%.2fM", static_cast<double>(n) / 1e6); }

}  // namespace

Trainer::Trainer(const Config& config, torch::Device device) : config_(config), device_(device) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const Config& config) {
  TS_RETURN_IF_ERROR(ValidateConfig(config));
  TS_ASSIGN_OR_RETURN(torch::Device device, ResolveDevice(config.train.device));
  std::unique_ptr<Trainer> trainer(new Trainer(config, device));
  TS_RETURN_IF_ERROR(trainer->Setup());
  return trainer;
}

absl::Status Trainer::Setup() {
  const TrainConfig& t = config_.train;
  const ModelConfig& m = config_.model;
  const int threads = t.threads > 0 ? static_cast<int>(t.threads)
                                    : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(std::max(1, threads));

  // Data first: its size decides whether the model's vocabulary is large enough.
  const data::Sampling sampling =
      config_.data.sampling == "sequential" || !config_.data.token_file.empty()
          ? data::Sampling::kSequential
          : data::Sampling::kRandom;
  int64_t needed_vocab = data::ByteTokenizer::kVocabSize;
  if (!config_.data.token_file.empty()) {
    TS_ASSIGN_OR_RETURN(train_corpus_, data::LoadTokenFile(config_.data.token_file));
    needed_vocab = 1 + *std::max_element(train_corpus_.tokens.begin(), train_corpus_.tokens.end());
  } else {
    auto corpus = data::LoadTextCorpus(config_.data.train);
    if (!corpus.ok()) return absl::Status(corpus.status().code(), absl::StrCat("data.train: ", corpus.status().message()));
    train_corpus_ = *std::move(corpus);
    if (!config_.data.val.empty()) {
      auto val = data::LoadTextCorpus(config_.data.val);
      if (!val.ok()) return absl::Status(val.status().code(), absl::StrCat("data.val: ", val.status().message()));
      val_corpus_ = *std::move(val);
    }
  }
  if (m.vocab_size < needed_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.vocab_size = ", m.vocab_size, " is smaller than the data's ", needed_vocab,
        " token ids: expected model.vocab_size >= ", needed_vocab));
  }
  if (static_cast<int64_t>(train_corpus_.tokens.size()) < t.seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat("the training data holds ", train_corpus_.tokens.size(),
                                                   " tokens, fewer than one sequence of train.seq_len + 1 = ",
                                                   t.seq_len + 1));
  }
  train_sampler_ = std::make_unique<data::SequenceSampler>(&train_corpus_.tokens, t.seq_len, sampling,
                                                           static_cast<uint64_t>(t.seed));
  if (t.eval_every > 0 && !val_corpus_.tokens.empty()) {
    if (static_cast<int64_t>(val_corpus_.tokens.size()) < t.seq_len + 1) {
      return absl::InvalidArgumentError(absl::StrCat("data.val holds ", val_corpus_.tokens.size(),
                                                     " tokens, fewer than one sequence of ", t.seq_len + 1));
    }
    // Held-out data is read in order so that every evaluation sees the same sequences.
    val_sampler_ = std::make_unique<data::SequenceSampler>(&val_corpus_.tokens, t.seq_len,
                                                           data::Sampling::kSequential, 0);
  }

  TS_RETURN_IF_ERROR(MakeDirs(t.run_dir));
  TS_RETURN_IF_ERROR(WriteFileAtomic(t.run_dir + "/config.yaml", ConfigToYaml(config_)));
  metrics_file_.open(t.run_dir + "/metrics.jsonl", std::ios::trunc);
  if (!metrics_file_) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write '", t.run_dir, "/metrics.jsonl'"));
  }

  const torch::ScalarType compute_dtype = t.precision == "bf16" ? torch::kBFloat16 : torch::kFloat;
  model_ = Transformer(m, t.seq_len);
  model_->to(device_);
  model_->InitializeWeights(static_cast<uint64_t>(t.seed));
  model_->SetComputeDtype(compute_dtype);

  std::vector<NamedParameter> params;
  for (auto& item : model_->named_parameters()) {
    const bool is_matrix = item.value().dim() >= 2 && item.key() != "tok_embeddings";
    params.push_back({item.key(), item.value(), is_matrix || t.decay_norms_and_embeddings});
  }
  optimizer_ = std::make_unique<FlatAdamW>(
      std::move(params), AdamWOptions{t.beta1, t.beta2, t.adam_eps, t.weight_decay});
  schedule_ = LrSchedule{t.lr, t.min_lr, t.warmup_steps, t.steps};

  flops_per_token_ = TrainingFlopsPerToken(m, t.seq_len);
  peak_tflops_ = t.peak_tflops > 0 ? t.peak_tflops : PeakTflops(device_, compute_dtype);

  TS_LOG(INFO) << "Tessera: LibTorch " << TORCH_VERSION << ", device " << device_.str() << ", "
               << at::get_num_threads() << " threads, precision " << t.precision;
  TS_LOG(INFO) << "model: " << Millions(ParameterCount(m)) << " parameters, " << m.n_layers
               << " layers, dim " << m.dim << ", heads " << m.n_heads << " (kv " << m.n_kv_heads
               << "), ffn " << m.ffn_dim << ", vocab " << m.vocab_size
               << (m.tie_embeddings ? " (tied head)" : "");
  TS_LOG(INFO) << "data: " << train_corpus_.documents << " documents, " << train_corpus_.tokens.size()
               << " training tokens" << (val_corpus_.tokens.empty() ? std::string()
                                        : absl::StrCat(", ", val_corpus_.tokens.size(), " held-out tokens"));
  TS_LOG(INFO) << "batch: " << t.global_batch << " x " << t.seq_len << " tokens per step in "
               << t.global_batch / t.micro_batch << " micro-batch(es) of " << t.micro_batch
               << "; optimizer state " << absl::StrFormat("%.1f", optimizer_->StateBytes() / 1048576.0)
               << " MiB";
  TS_LOG(INFO) << absl::StrFormat("MFU basis: %.3g FLOP/token, peak %.3g TFLOP/s", flops_per_token_,
                                  peak_tflops_);
  TS_LOG(INFO) << "run directory: " << t.run_dir;
  return absl::OkStatus();
}

void Trainer::TrainStep(int64_t step, StepMetrics* metrics) {
  const TrainConfig& t = config_.train;
  const int64_t micro_steps = t.global_batch / t.micro_batch;
  optimizer_->ZeroGrad();
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device_));
  for (int64_t micro = 0; micro < micro_steps; ++micro) {
    data::Batch batch = train_sampler_->Sequences(step * t.global_batch + micro * t.micro_batch, t.micro_batch);
    torch::Tensor loss = model_->Loss(batch.inputs.to(device_, /*non_blocking=*/true),
                                      batch.targets.to(device_, /*non_blocking=*/true));
    (micro_steps == 1 ? loss : loss / static_cast<double>(micro_steps)).backward();
    loss_sum += loss.detach();
  }
  metrics->loss = loss_sum.item<double>() / static_cast<double>(micro_steps);
  metrics->grad_norm = optimizer_->GradNorm();
  metrics->lr = schedule_.At(step);
  double scale = 1.0;
  if (t.grad_clip > 0 && metrics->grad_norm > t.grad_clip) scale = t.grad_clip / (metrics->grad_norm + 1e-6);
  optimizer_->Step(metrics->lr, scale);
}

double Trainer::Evaluate() {
  if (!val_sampler_) return std::nan("");
  torch::NoGradGuard no_grad;
  const TrainConfig& t = config_.train;
  torch::Tensor sum = torch::zeros({}, torch::TensorOptions().device(device_));
  for (int64_t b = 0; b < t.eval_batches; ++b) {
    data::Batch batch = val_sampler_->Sequences(b * t.micro_batch, t.micro_batch);
    sum += model_->Loss(batch.inputs.to(device_), batch.targets.to(device_));
  }
  return sum.item<double>() / static_cast<double>(t.eval_batches);
}

absl::Status Trainer::Run() {
  const TrainConfig& t = config_.train;
  const double tokens_per_step = static_cast<double>(t.global_batch * t.seq_len);
  for (int64_t step = 0; step < t.steps; ++step) {
    StepMetrics metrics;
    metrics.step = step + 1;
    metrics.total_steps = t.steps;
    auto start = std::chrono::steady_clock::now();
    if (step + 1 == t.profile_step) {
      const std::string trace = absl::StrCat(t.run_dir, "/profile_step_", step + 1, ".json");
      {
        torch::autograd::profiler::RecordProfile profile(trace);
        TrainStep(step, &metrics);
      }
      TS_LOG(INFO) << "profile of step " << step + 1 << " written to " << trace;
    } else {
      TrainStep(step, &metrics);
    }
    if (device_.is_cuda()) torch::cuda::synchronize();
    metrics.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.tokens_per_s = tokens_per_step / metrics.step_time_s;
    metrics.mfu = peak_tflops_ > 0 ? flops_per_token_ * metrics.tokens_per_s / (peak_tflops_ * 1e12) : 0;
    metrics.memory_mb = MemoryInUseMb(device_);
    if (!std::isfinite(metrics.loss)) {
      return absl::InternalError(absl::StrFormat(
          "the loss became %f at step %d (grad_norm %f): training diverged; lower train.lr (now %g) "
          "or raise train.warmup_steps",
          metrics.loss, metrics.step, metrics.grad_norm, t.lr));
    }
    const bool last = step + 1 == t.steps;
    if (t.eval_every > 0 && val_sampler_ && ((step + 1) % t.eval_every == 0 || last)) {
      metrics.eval_loss = Evaluate();
    }
    history_.push_back(metrics);
    if ((step + 1) % t.log_every == 0 || last || step == 0 || metrics.eval_loss) {
      metrics_file_ << MetricsJsonLine(metrics) << std::flush;
      TS_LOG(INFO) << MetricsConsoleLine(metrics);
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
