// `tessera plan CONFIG --world N --memory-gib M`: the layouts of the config's model and batch on N
// GPUs that fit in M GiB per GPU, ranked by estimated step time, and why the others do not fit.
// The first thing to run before a cluster job: then `tessera validate` the chosen layout.
//
// Candidates: tensor parallel sizes inside a node (tp <= --gpus-per-node, with sequence
// parallelism), every pipeline size that divides the rest and leaves a layer per stage, data
// parallel for what remains; per pipeline size 1F1B, ZB-H1 and interleaved 1F1B with 2, 4 or 8
// virtual stages (when the layers do not split evenly into the chunks, the first and last chunks
// get one layer fewer each, in turn, as Llama 3 did with its first and last stages; the plan
// prints that parallel.pp_layers); ZeRO 0-3 (0 alone at dp 1); recompute none, selective, full,
// and full for the first half of each chunk's layers (model.recompute_layers).
// The micro-batch, sequence length, global batch and precision are the config's.
//
// Each candidate goes through the checks `tessera validate` makes (layout_check.h, the config
// check), then the memory estimate (memory_estimate.h: the largest stage, with a fused attention
// kernel, as GPUs run bf16 attention) against M minus --reserve-gib (the CUDA context, NCCL's
// buffers and the allocator's fragmentation, which the estimate does not count), then the
// step-time model (step_time_estimate.h). Exit 0 when some layout fits, 1 when none does.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/config_args.h"
#include "cli/hardware_args.h"
#include "cli/layout_check.h"
#include "cli/memory_estimate.h"
#include "cli/step_time_estimate.h"
#include "config/config.h"
#include "core/exit_codes.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "plan";
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// One layout tried, and what came of it.
struct Candidate {
  Config config;
  int64_t dp = 0;
  bool fits = false;
  std::string why;     // the reason it does not fit; empty when it fits
  std::string reason;  // the kind of reason, for the summary: "memory", "batch", ...
  double memory = 0;   // the largest stage's estimate, bytes (0 when it did not get that far)
  int64_t worst_stage = 0;
  StepTimeEstimate time;
};

std::string Describe(const Config& c, int64_t dp) {
  const ParallelConfig& p = c.parallel;
  std::string schedule = p.pp == 1 ? "-" : p.pp_schedule.Text();
  if (p.virtual_stages > 1) absl::StrAppend(&schedule, " v", p.virtual_stages);
  std::string recompute = EnumName(c.model.recompute);
  if (c.model.recompute_layers > 0) absl::StrAppend(&recompute, " ", c.model.recompute_layers, "/chunk");
  const std::string cp = p.cp > 1 ? absl::StrFormat(" cp %d", p.cp) : "";
  return absl::StrFormat("tp %d%s pp %d dp %d, %s, zero %d, recompute %s", p.tp, cp, p.pp, dp, schedule,
                         p.zero, recompute);
}

// Layer counts per model chunk for interleaving `n_layers` over pp x v chunks when they do not
// divide evenly: ceil(n / chunks) each, one fewer for the first chunk, the last, the second, the
// second to last, ... until they sum to n; empty when even or when a chunk would be left empty.
std::vector<int64_t> UnevenChunks(int64_t n_layers, int64_t chunks) {
  if (n_layers % chunks == 0) return {};
  const int64_t base = (n_layers + chunks - 1) / chunks;
  int64_t deficit = base * chunks - n_layers;
  if (base < 2 || deficit > chunks) return {};
  std::vector<int64_t> layers(chunks, base);
  for (int64_t i = 0; deficit > 0; ++i, --deficit) {
    layers[i % 2 == 0 ? i / 2 : chunks - 1 - i / 2] -= 1;
  }
  return layers;
}

// The (tp, pp, schedule, v) grid for `world` GPUs, before ZeRO and recomputation.
std::vector<Config> LayoutGrid(const Config& base, int64_t world, int64_t gpus_per_node) {
  std::vector<Config> out;
  const int64_t n_layers = base.model.n_layers;
  for (int64_t tp = 1; tp <= std::min(world, gpus_per_node); ++tp) {
    if (world % tp != 0) continue;
    for (int64_t pp = 1; pp <= std::min(world / tp, n_layers); ++pp) {
      if ((world / tp) % (pp * base.parallel.cp) != 0) continue;
      std::vector<std::pair<PipelineScheduleKind, int64_t>> schedules = {{PipelineScheduleKind::k1F1B, 1}};
      if (pp > 1) {
        schedules.push_back({PipelineScheduleKind::kZbH1, 1});
        for (int64_t v : {2, 4, 8}) {
          if (pp * v <= n_layers) schedules.push_back({PipelineScheduleKind::kInterleaved, v});
        }
      }
      for (const auto& [kind, v] : schedules) {
        Config c = base;
        ParallelConfig& p = c.parallel;
        p.tp = tp;
        p.pp = pp;
        p.dp = world / (tp * p.cp * pp);  // cp as the config sets it (plan does not vary it)
        p.sequence_parallel = tp > 1;
        p.pp_schedule = {kind, ""};
        p.virtual_stages = v;
        p.pp_layers = v > 1 ? UnevenChunks(n_layers, pp * v) : std::vector<int64_t>{};
        out.push_back(c);
      }
    }
  }
  return out;
}

// Checks one candidate and estimates its memory and step time.
void Evaluate(Candidate& k, int64_t world, double budget, const Hardware& hw) {
  const auto refuse = [&](const std::string& reason, const absl::Status& s) {
    k.reason = reason;
    k.why = std::string(s.message());
  };
  if (absl::Status s = ValidateConfig(k.config); !s.ok()) return refuse("config", s);
  auto layout = CheckLayout(k.config, world);
  if (!layout.ok()) return refuse("batch or layout", layout.status());
  auto pipeline = CheckPipeline(k.config, layout->microbatches);
  if (!pipeline.ok()) return refuse("pipeline partition or schedule", pipeline.status());
  // ZeRO shards over the dp x cp ranks that hold the same parameters.
  const std::vector<StageRow> stages =
      StageMemory(k.config, pipeline->partition, pipeline->peak, layout->dp * k.config.parallel.cp);
  for (const StageRow& s : stages) {
    if (s.total_fused() > k.memory) {
      k.memory = s.total_fused();
      k.worst_stage = s.stage;
    }
  }
  auto time = EstimateStepTime(k.config, *layout, *pipeline, stages, hw);
  if (!time.ok()) return refuse("pipeline partition or schedule", time.status());
  k.time = *time;
  if (k.memory > budget) {
    k.reason = "memory";
    k.why =
        absl::StrFormat("stage %d needs %.1f GiB > %.1f GiB", k.worst_stage, k.memory / kGiB, budget / kGiB);
    return;
  }
  k.fits = true;
}

std::vector<Candidate> Candidates(const Config& base, int64_t world, double budget, const Hardware& hw) {
  std::vector<Candidate> out;
  for (const Config& layout : LayoutGrid(base, world, hw.gpus_per_node)) {
    const int64_t dp = world / (layout.parallel.tp * layout.parallel.pp);
    // Full recomputation of every layer, or of the first half of each chunk's layers.
    const int64_t chunks = layout.parallel.pp * layout.parallel.virtual_stages;
    const int64_t half = (base.model.n_layers + chunks - 1) / chunks / 2;
    std::vector<std::pair<RecomputeMode, int64_t>> modes = {
        {RecomputeMode::kNone, 0}, {RecomputeMode::kSelective, 0}, {RecomputeMode::kFull, 0}};
    if (half > 0) modes.push_back({RecomputeMode::kFull, half});
    for (int64_t zero = 0; zero <= (dp > 1 ? 3 : 0); ++zero) {
      for (const auto& [mode, layers] : modes) {
        Candidate k;
        k.config = layout;
        k.dp = dp;
        k.config.parallel.zero = zero;
        k.config.model.recompute = mode;
        k.config.model.recompute_layers = layers;
        Evaluate(k, world, budget, hw);
        out.push_back(std::move(k));
      }
    }
  }
  return out;
}

// The --set flags that select candidate `k` (on top of the config).
std::string SetFlags(const Candidate& k) {
  const ParallelConfig& p = k.config.parallel;
  std::string out = absl::StrFormat(
      "--set parallel.tp=%d --set parallel.pp=%d --set parallel.sequence_parallel=%s --set parallel.zero=%d "
      "--set model.recompute=%s",
      p.tp, p.pp, p.sequence_parallel ? "true" : "false", p.zero, EnumName(k.config.model.recompute));
  if (p.pp > 1) {
    absl::StrAppend(&out, " --set parallel.pp_schedule=", p.pp_schedule.Text(),
                    " --set parallel.virtual_stages=", p.virtual_stages);
  }
  if (k.config.model.recompute_layers > 0) {
    absl::StrAppend(&out, " --set model.recompute_layers=", k.config.model.recompute_layers);
  }
  if (!p.pp_layers.empty()) {
    absl::StrAppend(&out, " --set parallel.pp_layers=[", absl::StrJoin(p.pp_layers, ","), "]");
  }
  return out;
}

void PrintFitting(const std::vector<const Candidate*>& fitting, int64_t top, int64_t world) {
  std::printf("  %4s  %-62s  %10s  %10s  %7s  %13s  %6s\n", "rank", "layout", "memory GiB", "step s",
              "bubble", "tokens/s/GPU", "MFU");
  for (size_t i = 0; i < fitting.size() && static_cast<int64_t>(i) < top; ++i) {
    const Candidate& k = *fitting[i];
    std::printf("  %4zu  %-62s  %10.1f  %10.3g  %6.1f%%  %13.0f  %5.1f%%\n", i + 1,
                Describe(k.config, k.dp).c_str(), k.memory / kGiB, k.time.total_s, 100.0 * k.time.bubble,
                k.time.tokens_per_s / static_cast<double>(world), 100.0 * k.time.mfu);
  }
  if (static_cast<int64_t>(fitting.size()) > top) {
    std::printf("  ... and %zu more (--top N, or --all for every layout tried)\n", fitting.size() - top);
  }
}

// Why the others do not fit: a count per kind of reason with one example each, and the fastest
// layouts that fail on memory alone (what more memory, or a lever, would buy).
void PrintRefused(const std::vector<Candidate>& all) {
  std::map<std::string, std::pair<int64_t, const Candidate*>> by_reason;
  std::vector<const Candidate*> memory;
  for (const Candidate& k : all) {
    if (k.fits) continue;
    auto& [count, example] = by_reason[k.reason];
    if (count++ == 0) example = &k;
    if (k.reason == "memory") memory.push_back(&k);
  }
  if (by_reason.empty()) return;
  std::printf("did not fit:\n");
  for (const auto& [reason, entry] : by_reason) {
    std::printf("  %lld layout(s): %s, e.g. %s: %s\n", static_cast<long long>(entry.first), reason.c_str(),
                Describe(entry.second->config, entry.second->dp).c_str(), entry.second->why.c_str());
  }
  std::sort(memory.begin(), memory.end(),
            [](const Candidate* a, const Candidate* b) { return a->time.total_s < b->time.total_s; });
  if (!memory.empty()) std::printf("  the fastest of those over the memory budget:\n");
  for (size_t i = 0; i < memory.size() && i < 5; ++i) {
    std::printf("    %-62s  step %.3g s: %s\n", Describe(memory[i]->config, memory[i]->dp).c_str(),
                memory[i]->time.total_s, memory[i]->why.c_str());
  }
}

void PrintAll(const std::vector<Candidate>& all) {
  std::printf("every layout tried:\n");
  for (const Candidate& k : all) {
    std::printf("  %-62s  %s\n", Describe(k.config, k.dp).c_str(),
                k.fits ? absl::StrFormat("fits: %.1f GiB, step %.3g s, MFU %.1f%%", k.memory / kGiB,
                                         k.time.total_s, 100.0 * k.time.mfu)
                             .c_str()
                       : k.why.c_str());
  }
}

int Plan(const Args& args) {
  auto world = args.GetInt("world", 0, {.min = 1});
  if (!world.ok()) return ReportUsageError(kName, world.status());
  if (!args.Has("world") || !args.Has("memory-gib")) {
    return ReportUsageError(kName,
                            absl::InvalidArgumentError(
                                "--world N (the GPUs of the job) and --memory-gib M (per GPU) are needed"));
  }
  auto memory = args.GetDouble("memory-gib", 0, 0);
  auto reserve = args.GetDouble("reserve-gib", 4, 0);
  auto top = args.GetInt("top", 10, {.min = 1});
  for (const absl::Status& s : {memory.status(), reserve.status(), top.status()}) {
    if (!s.ok()) return ReportUsageError(kName, s);
  }
  if (*memory <= *reserve) {
    return ReportUsageError(kName,
                            absl::InvalidArgumentError(absl::StrFormat(
                                "--memory-gib %g leaves nothing after --reserve-gib %g", *memory, *reserve)));
  }
  auto config = LoadConfigFromArgs(args);
  if (!config.ok()) return ReportError(kName, config.status(), kExitUsage);
  auto hw = HardwareFromArgs(args, *config);
  if (!hw.ok()) return ReportUsageError(kName, hw.status());
  const double budget = (*memory - *reserve) * kGiB;
  const std::string path = ConfigPath(args);
  std::printf("plan: %s on %lld GPUs of %g GiB (%g GiB for the estimate after --reserve-gib %g)\n",
              path.empty() ? "(defaults and --set)" : path.c_str(), static_cast<long long>(*world), *memory,
              *memory - *reserve, *reserve);
  std::printf("  machine: %s\n", DescribeHardware(*hw).c_str());
  std::vector<Candidate> all = Candidates(*config, *world, budget, *hw);
  std::vector<const Candidate*> fitting;
  for (const Candidate& k : all) {
    if (k.fits) fitting.push_back(&k);
  }
  std::stable_sort(fitting.begin(), fitting.end(),
                   [](const Candidate* a, const Candidate* b) { return a->time.total_s < b->time.total_s; });
  if (fitting.empty()) {
    std::printf("none of the %zu layouts tried fits\n", all.size());
  } else {
    std::printf("%zu of %zu layouts fit, fastest first (estimated step time; memory: the largest stage):\n",
                fitting.size(), all.size());
    PrintFitting(fitting, *top, *world);
    std::printf("the first: tessera validate %s--world %lld %s\n", path.empty() ? "" : (path + " ").c_str(),
                static_cast<long long>(*world), SetFlags(*fitting[0]).c_str());
  }
  PrintRefused(all);
  if (args.Has("all")) PrintAll(all);
  return fitting.empty() ? kExitRuntimeError : kExitOk;
}

}  // namespace

Command PlanCommand() {
  std::vector<Flag> flags = {Flag::Value("world", "a positive integer"),
                             Flag::Value("memory-gib", "a number of GiB per GPU"),
                             Flag::Value("reserve-gib", "a number of GiB"),
                             Flag::Value("top", "a positive integer"), Flag::Bool("all")};
  for (Flag& f : HardwareFlags()) flags.push_back(std::move(f));
  return {
      .name = kName,
      .usage =
          "plan CONFIG.yaml --world N --memory-gib M [--reserve-gib 4] [--top 10] [--all] "
          "[--peak-tflops T] [--gemm-efficiency 0.7] [--intra-node-gb-s 360] [--inter-node-gb-s 40] "
          "[--gpus-per-node 8] [--memory-gb-s 3350] [--set key=value]...",
      .summary =
          "the layouts that fit N GPUs of M GiB,\nranked by estimated step time, and why\nthe "
          "others do not fit",
      .details =
          "Tries every layout of the config's model and batch on N GPUs (tp inside a node, pp, dp; 1F1B,\n"
          "ZB-H1, interleaved with 2/4/8 virtual stages; ZeRO 0-3; recompute none/selective/full, and full\n"
          "for half of each chunk's layers) and\n"
          "keeps those whose largest pipeline stage fits in M - reserve GiB (tessera validate's memory\n"
          "estimate, with a fused attention kernel). They are ranked by an estimated step time: matrix\n"
          "products at --gemm-efficiency x --peak-tflops, collectives as rings at the bus bandwidths\n"
          "given (inside a node, across nodes), the pipeline's bubble simulated with those costs. It is a\n"
          "model, not a measurement (docs/planning.md states it whole, with what it leaves out). Exit 0\n"
          "when some layout fits, 1 when none does, 2 for a bad command line or config.",
      .args = ConfigArgSpec(flags),
      .run = Plan};
}

}  // namespace tessera::cli
