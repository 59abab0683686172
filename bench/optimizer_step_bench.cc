// Times one AdamW optimizer step on the CPU over the parameters of a Llama model shape (default:
// the ~100M case of scripts/bench/vs_hf.sh), two ways, alternating step by step in one process:
//   old  the separate LibTorch tensor ops per flat range that FlatAdamW ran before its fused CPU
//        loop (grads * scale, decay, lerp_, mul_ + addcmul_, sqrt / + eps, addcdiv_),
//        reimplemented here as the fixed baseline;
//   new  tessera::FlatAdamW::Step, the optimizer the trainer runs.
// Both update the same flat ranges, laid out by the data-parallel reducer exactly as the trainer
// lays them out (one process, zero 0: every bucket is one range, decayed elements first), each
// with its own two moments. scripts/bench/optimizer_step.sh runs this beside PyTorch's own AdamW.
//
// Output, one line each: `bench params=... ranges=... decayed=... threads=...`, a check of old
// against new on a small case (`check ...`), then `step side=old|new ms=...` for every timed step.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/logging.h"
#include "model/model.h"
#include "model/sharding.h"
#include "parallel/comm/local_comm.h"
#include "parallel/comm/watchdog.h"
#include "parallel/data_parallel/grad_reducer.h"
#include "trainer/flat_adamw.h"

namespace tessera {
namespace {

struct Args {
  int64_t dim = 768, n_layers = 14, n_heads = 12, n_kv_heads = 4, ffn_dim = 2432, vocab = 512;
  int threads = 0;  // 0: leave LibTorch's default
  int warmup = 2;   // untimed steps of each side first
  int steps = 5;    // timed steps of each side
  bool new_first = false;
  double lr = 3e-4;
  // A clipping factor below 1, as in the early steps of a clipped run: the old path then pays
  // for its scaled copy of the gradients, as it did in training.
  double grad_scale = 0.5;
  double bucket_mb = 25;  // parallel.bucket_mb's default
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "optimizer_step_bench: %s\n"
               "usage: optimizer_step_bench [--dim=768] [--layers=14] [--heads=12] [--kv-heads=4] "
               "[--ffn=2432] [--vocab=512] [--threads=N] [--warmup=2] [--steps=5] [--first=old|new] "
               "[--lr=3e-4] [--grad-scale=0.5] [--bucket-mb=25]\n",
               why.c_str());
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  // Every numeric option, read as a double and stored into its field.
  struct Option {
    const char* name;
    std::function<void(double)> set;
  };
  const std::vector<Option> options = {
      {"dim", [&](double v) { a.dim = static_cast<int64_t>(v); }},
      {"layers", [&](double v) { a.n_layers = static_cast<int64_t>(v); }},
      {"heads", [&](double v) { a.n_heads = static_cast<int64_t>(v); }},
      {"kv-heads", [&](double v) { a.n_kv_heads = static_cast<int64_t>(v); }},
      {"ffn", [&](double v) { a.ffn_dim = static_cast<int64_t>(v); }},
      {"vocab", [&](double v) { a.vocab = static_cast<int64_t>(v); }},
      {"threads", [&](double v) { a.threads = static_cast<int>(v); }},
      {"warmup", [&](double v) { a.warmup = static_cast<int>(v); }},
      {"steps", [&](double v) { a.steps = static_cast<int>(v); }},
      {"lr", [&](double v) { a.lr = v; }},
      {"grad-scale", [&](double v) { a.grad_scale = v; }},
      {"bucket-mb", [&](double v) { a.bucket_mb = v; }},
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == std::string_view::npos) {
      Usage("bad argument '" + std::string(arg) + "'");
    }
    const std::string key(arg.substr(2, eq - 2)), value(arg.substr(eq + 1));
    if (key == "first") {
      if (value != "old" && value != "new") Usage("--first must be old or new");
      a.new_first = value == "new";
      continue;
    }
    auto option =
        std::find_if(options.begin(), options.end(), [&](const Option& o) { return key == o.name; });
    if (option == options.end()) Usage("unknown option --" + key);
    char* end = nullptr;
    const double number = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || *end != '\0') Usage("--" + key + " needs a number, got '" + value + "'");
    option->set(number);
  }
  if (a.steps < 1 || a.warmup < 0) Usage("--steps must be >= 1 and --warmup >= 0");
  return a;
}

// The baseline: FlatAdamW::StepRangeWithTensorOps (trainer/flat_adamw.cc) on fp32 ranges, the
// arithmetic FlatAdamW ran on the CPU before its fused loop, copied so that it stays fixed while
// FlatAdamW changes. Per element with a clipping factor: ~88 bytes of memory traffic (the scaled
// gradient copy, the sqrt and quotient temporaries, and every op reading and writing its tensors).
class TensorOpsAdamW {
 public:
  TensorOpsAdamW(const std::vector<parallel::OwnedRange>& ranges, AdamWOptions options) : options_(options) {
    int64_t total = 0;
    for (const parallel::OwnedRange& r : ranges) total += r.params.numel();
    exp_avg_ = torch::zeros({total});
    exp_avg_sq_ = torch::zeros({total});
    int64_t offset = 0;
    for (const parallel::OwnedRange& r : ranges) {
      const int64_t n = r.params.numel();
      ranges_.push_back(
          {r.params, r.grads, exp_avg_.narrow(0, offset, n), exp_avg_sq_.narrow(0, offset, n), r.decayed});
      offset += n;
    }
  }

  void Step(double lr, double grad_scale) {
    torch::NoGradGuard no_grad;
    ++step_;
    const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
    const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
    for (Range& r : ranges_) {
      if (r.params.numel() == 0) continue;
      const torch::Tensor grads = grad_scale != 1.0 ? r.grads * grad_scale : r.grads;
      if (options_.weight_decay != 0.0 && r.decayed > 0) {
        r.params.narrow(0, 0, r.decayed).mul_(1.0 - lr * options_.weight_decay);
      }
      r.exp_avg.lerp_(grads, 1.0 - options_.beta1);
      r.exp_avg_sq.mul_(options_.beta2).addcmul_(grads, grads, 1.0 - options_.beta2);
      torch::Tensor denom = (r.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(options_.eps);
      r.params.addcdiv_(r.exp_avg, denom, -lr / bias1);
    }
  }

 private:
  struct Range {
    torch::Tensor params, grads, exp_avg, exp_avg_sq;
    int64_t decayed;
  };
  AdamWOptions options_;
  std::vector<Range> ranges_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

// The trainer's settings (config/config.h defaults: betas 0.9/0.95, eps 1e-8, decay 0.1).
AdamWOptions TrainerAdamW() {
  const TrainConfig t;
  return AdamWOptions{t.beta1, t.beta2, t.adam_eps, t.weight_decay};
}

// Sizes may not be multiples of the loop's 64Ki chunks, and the decayed prefix of a range ends
// mid-chunk in the trainer's layout; this small case has both. Three steps of each implementation
// from the same start; the two should agree to fp32 rounding (they run the same operations in the
// same order), which shows the baseline computes what FlatAdamW computes.
double MaxDifferenceOnSmallCase(const Args& a) {
  torch::manual_seed(7);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{200003, 150001}, {65536 * 3 + 5, 0}};
  std::vector<torch::Tensor> params, grads;
  std::vector<parallel::OwnedRange> old_ranges, new_ranges;
  for (const auto& [n, decayed] : shapes) {
    torch::Tensor p = torch::randn({n}) * 0.02, g = torch::randn({n});
    for (auto* ranges : {&old_ranges, &new_ranges}) {
      parallel::OwnedRange r;
      r.params = p.clone();
      r.grads = g;
      r.decayed = decayed;
      ranges->push_back(r);
    }
  }
  TensorOpsAdamW old_adamw(old_ranges, TrainerAdamW());
  FlatAdamW new_adamw(new_ranges, TrainerAdamW());
  for (int step = 0; step < 3; ++step) {
    old_adamw.Step(a.lr, a.grad_scale);
    new_adamw.Step(a.lr, a.grad_scale);
  }
  double diff = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    diff = std::max(diff, (old_ranges[i].params - new_ranges[i].params).abs().max().item<double>());
  }
  return diff;
}

int Run(const Args& a) {
  if (a.threads > 0) at::set_num_threads(a.threads);
  // Reported, not enforced: FlatAdamW may round differently and still be right; a gap far above
  // fp32 rounding would mean the baseline no longer times the same update.
  const double diff = MaxDifferenceOnSmallCase(a);
  std::printf("check old_vs_new_max_abs_diff=%.3e (3 steps, 2 ranges, lr %g)\n", diff, a.lr);
  std::fflush(stdout);

  ModelConfig m;
  m.dim = a.dim;
  m.n_layers = a.n_layers;
  m.n_heads = a.n_heads;
  m.n_kv_heads = a.n_kv_heads;
  m.ffn_dim = a.ffn_dim;
  m.vocab_size = a.vocab;
  m.tie_embeddings = true;
  torch::manual_seed(1234);
  Transformer model(m, /*max_seq_len=*/512);
  model->InitializeWeights(1234);

  // The parameters as the trainer hands them to the reducer (Trainer::SetupReducer).
  std::vector<parallel::DataParallelParameter> params;
  for (const PlannedParameter& p : PlanParameters({model->ParameterInfos()}, m, ShardingContext{})) {
    parallel::DataParallelParameter d;
    d.name = p.info.name;
    d.tensor = p.info.tensor;
    d.decay = p.role.decay;
    d.norm_weight = p.role.norm_weight;
    d.late = p.role.late;
    d.group = p.chunk;
    params.push_back(d);
  }
  parallel::Watchdog watchdog(parallel::Watchdog::Options{});
  std::unique_ptr<parallel::Communicator> dp = parallel::CreateLocalCommunicator(&watchdog, "dp", 0);
  parallel::DataParallelOptions options;
  options.zero = 0;
  options.bucket_mb = a.bucket_mb;
  auto reducer = parallel::GradReducer::Create(std::move(params), *dp, options);
  TS_CHECK(reducer.ok()) << reducer.status().message();
  std::vector<parallel::OwnedRange> ranges = (*reducer)->owned();

  // Gradients of a plausible size; their values do not change the work done.
  int64_t numel = 0, decayed = 0;
  {
    torch::NoGradGuard no_grad;
    for (parallel::OwnedRange& r : ranges) {
      r.grads.normal_(0.0, 1e-2);
      numel += r.params.numel();
      decayed += r.decayed;
    }
  }
  TensorOpsAdamW old_adamw(ranges, TrainerAdamW());
  FlatAdamW new_adamw(ranges, TrainerAdamW());
  std::printf("bench params=%lld ranges=%zu decayed=%lld threads=%d grad_scale=%g\n",
              static_cast<long long>(numel), ranges.size(), static_cast<long long>(decayed),
              at::get_num_threads(), a.grad_scale);
  std::fflush(stdout);

  auto time_ms = [&](bool is_new) {
    const auto start = std::chrono::steady_clock::now();
    if (is_new) {
      new_adamw.Step(a.lr, a.grad_scale);
    } else {
      old_adamw.Step(a.lr, a.grad_scale);
    }
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  // Alternating step by step, so a slow spell of a shared machine falls on both sides.
  for (int i = 0; i < 2 * (a.warmup + a.steps); ++i) {
    const bool is_new = (i % 2 == 0) == a.new_first;
    const double ms = time_ms(is_new);
    if (i >= 2 * a.warmup) std::printf("step side=%s ms=%.3f\n", is_new ? "new" : "old", ms);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Run(tessera::ParseArgs(argc, argv)); }
