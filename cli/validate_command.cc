// `tessera validate`: checks a config the way `tessera train` would at start-up, without
// starting anything or opening data, and prints what an operator needs before queueing a job:
// the parameter count (total, and per rank under tensor and pipeline parallelism), a per-rank
// memory estimate (memory_estimate.h), the rank layout, the pipeline schedule's bubble, an
// estimated step time and MFU (step_time_estimate.h), and whether the data corpora exist on this
// machine (a warning, not an error: clusters have their own paths). Exit codes: 0 valid (also
// with warnings), 2 invalid, with the message.
//
// The checks are the ones `tessera train` makes before its first step (layout_check.h): the
// config (ValidateConfig), the layout against the world size, the batch split over data-parallel
// ranks, the tensor-parallel divisibility of the MLP, the pipeline partition and the schedule
// (generated or read from its file, and simulated).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

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
#include "data/indexed_dataset.h"
#include "model/model.h"
#include "parallel/topology.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "validate";
constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = 1024.0 * kMiB;

// 8030261248 -> "8,030,261,248".
std::string Grouped(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// 8030261248 -> "8.03B"; 4441600 -> "4.44M".
std::string Short(double n) {
  if (n >= 1e12) return absl::StrFormat("%.2fT", n / 1e12);
  if (n >= 1e9) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.2fM", n / 1e6);
  if (n >= 1e3) return absl::StrFormat("%.2fK", n / 1e3);
  return absl::StrFormat("%.0f", n);
}

std::string Members(const std::vector<int64_t>& g) {
  if (g.size() <= 8) return absl::StrCat("[", absl::StrJoin(g, ","), "]");
  return absl::StrCat("[", g[0], ",", g[1], ",", g[2], ",", g[3], ",...,", g[g.size() - 2], ",", g.back(),
                      "]");
}

// The error, then "invalid" on stdout: the verdict is the last line whatever went wrong.
int Invalid(const absl::Status& s) {
  ReportError(kName, s, kExitUsage);
  std::printf("invalid\n");
  return kExitUsage;
}

void PrintModel(const ModelConfig& m) {
  const LayerShare layer = LayerPerRank(m, 1);
  const int64_t table = m.vocab_size * m.dim;
  std::printf("model: %s parameters (%s): %lld layers x %s + embedding %s + head %s + final norm %lld\n",
              Grouped(ParameterCount(m)).c_str(), Short(static_cast<double>(ParameterCount(m))).c_str(),
              static_cast<long long>(m.n_layers), Grouped(layer.total()).c_str(), Grouped(table).c_str(),
              m.tie_embeddings ? "tied to the embedding" : Grouped(table).c_str(),
              static_cast<long long>(m.dim));
  std::printf("       dim %lld, %lld heads (%lld kv), head dim %lld, ffn %lld, vocab %lld, rope theta %g\n",
              static_cast<long long>(m.dim), static_cast<long long>(m.n_heads),
              static_cast<long long>(m.n_kv_heads), static_cast<long long>(m.head_dim()),
              static_cast<long long>(m.ffn_dim), static_cast<long long>(m.vocab_size), m.rope_theta);
  if (m.rope_scaling == RopeScaling::kLinear) {
    std::printf("       rope scaling linear: factor %g\n", m.rope_factor);
  } else if (m.rope_scaling == RopeScaling::kLlama3) {
    std::printf("       rope scaling llama3: factor %g, low/high freq factors %g/%g, original context %lld\n",
                m.rope_factor, m.rope_low_freq_factor, m.rope_high_freq_factor,
                static_cast<long long>(m.rope_original_max_position_embeddings));
  }
}

void PrintTraining(const Config& c, const Layout& layout) {
  const TrainConfig& tr = c.train;
  const ParallelConfig& p = c.parallel;
  const int64_t tokens_per_step = tr.global_batch * tr.seq_len;
  std::printf(
      "training: %lld sequences x %lld tokens = %s tokens per step (%s over %lld steps); micro-batch %lld, "
      "%lld micro-batch(es) per step per data-parallel rank; %s, zero %lld%s\n",
      static_cast<long long>(tr.global_batch), static_cast<long long>(tr.seq_len),
      Grouped(tokens_per_step).c_str(),
      Short(static_cast<double>(tokens_per_step) * static_cast<double>(tr.steps)).c_str(),
      static_cast<long long>(tr.steps), static_cast<long long>(tr.micro_batch),
      static_cast<long long>(layout.microbatches), EnumName(tr.precision).c_str(),
      static_cast<long long>(p.zero), p.sequence_parallel && p.tp > 1 ? ", sequence parallel" : "");
  std::printf("        lr %g (warm-up %lld steps, cosine to %g), weight decay %g, grad clip %g\n", tr.lr,
              static_cast<long long>(tr.warmup_steps), tr.min_lr, tr.weight_decay, tr.grad_clip);
}

void PrintLayout(const ParallelConfig& p, const Layout& layout) {
  const parallel::Topology& t = layout.topology;
  const std::string table = t.Table();
  std::string out = table.substr(0, table.find('\n') + 1);
  const std::pair<const char*, parallel::Dim> dims[] = {{"tp", parallel::Dim::kTensor},
                                                        {"cp", parallel::Dim::kContext},
                                                        {"pp", parallel::Dim::kPipeline},
                                                        {"dp", parallel::Dim::kData}};
  for (const auto& [label, dim] : dims) {
    if (dim == parallel::Dim::kContext && p.cp == 1) continue;
    const auto groups = t.Groups(dim);
    absl::StrAppend(&out, "  ", label, ": ", groups.size(), " group(s) of ", groups[0].size(),
                    " rank(s), the first ", Members(groups[0]), "\n");
  }
  absl::StrAppend(&out, "  model replica of rank 0: ", Members(t.ModelGroupOf(0)),
                  "; embedding group of rank 0: ", Members(t.EmbeddingGroupOf(0)), "\n");
  if (p.cp > 1) {
    absl::StrAppend(
        &out, "  gradients reduced over dp x cp; the group of rank 0: ", Members(t.ReplicaGroupOf(0)), "\n");
  }
  const int64_t last = t.world_size() - 1;
  const parallel::Coordinates c = t.CoordinatesOf(last);
  absl::StrAppend(&out, "  rank ", last, " is tp ", c.tp, p.cp > 1 ? absl::StrCat(" cp ", c.cp) : "", " pp ",
                  c.pp, " dp ", c.dp, "\n");
  std::printf("layout: %s", out.c_str());
  if (!layout.world_note.empty()) {
    std::printf("  world %lld%s\n", static_cast<long long>(layout.world), layout.world_note.c_str());
  }
  std::printf(
      "  every rank: tessera topology --world %lld --set parallel.tp=%lld --set parallel.cp=%lld --set "
      "parallel.pp=%lld --set parallel.order=%s\n",
      static_cast<long long>(layout.world), static_cast<long long>(p.tp), static_cast<long long>(p.cp),
      static_cast<long long>(p.pp), p.order.c_str());
}

// The pipeline's schedule, its simulated bubble and the micro-batches in flight per stage.
void PrintPipeline(const ParallelConfig& p, const PipelinePlan& plan, int64_t microbatches) {
  if (p.pp == 1) {
    std::printf("pipeline: none (pp 1): micro-batches run one after another, one in flight\n");
    return;
  }
  std::printf(
      "pipeline: %s, %lld stages x %lld chunk(s), %lld micro-batches per step: bubble %.1f%% (simulated, "
      "backward = 2 x forward, free communication); micro-batches in flight at the peak, per stage: %s\n",
      p.pp_schedule.Text().c_str(), static_cast<long long>(p.pp), static_cast<long long>(p.virtual_stages),
      static_cast<long long>(microbatches), 100.0 * plan.bubble, absl::StrJoin(plan.peak, " ").c_str());
  if (p.virtual_stages > 1) {
    std::printf("          (counted in chunks: each holds 1/%lld of a stage's layers)\n",
                static_cast<long long>(p.virtual_stages));
  }
}

void PrintMemory(const Config& c, const std::vector<StageRow>& stages, int64_t dp) {
  const ParallelConfig& p = c.parallel;
  const bool bf16 = c.train.precision == Precision::kBf16;
  // GiB for real models, MiB for the small ones of CPU runs.
  double largest = 0;
  for (const StageRow& s : stages) largest = std::max(largest, s.total());
  const double unit = largest >= kGiB ? kGiB : kMiB;
  const char* unit_name = largest >= kGiB ? "GiB" : "MiB";
  // Under context parallelism each rank's activations are those of its seq / cp tokens, with
  // attention's gathered K/V and masks of the whole sequence (memory_estimate.h).
  const std::string context = p.cp > 1 ? absl::StrCat(", with context parallelism (", c.train.seq_len / p.cp,
                                                      " of ", c.train.seq_len, " tokens per rank)")
                                       : "";
  std::printf(
      "memory per rank, %s (weights %s, fp32 master%s, AdamW 8 B%s, gradients %s: exact, as the "
      "trainer allocates them; activations estimated after Korthikanti et al.%s%s%s):\n",
      unit_name,
      p.zero == 3 ? (bf16 ? "2 B/param / dp (bf16)" : "4 B/param / dp (fp32)")
                  : (bf16 ? "2 B/param (bf16)" : "4 B/param (fp32)"),
      bf16 ? (p.zero >= 1 ? " 4 B / dp" : " 4 B") : ": none", p.zero >= 1 ? " / dp" : "",
      p.zero == 0   ? "4 B"
      : p.zero == 1 ? "4 B + 4 B / dp"
                    : "4 B / dp",
      p.tp > 1 ? (p.sequence_parallel ? " with tensor and sequence parallelism" : " with tensor parallelism")
               : "",
      context.c_str(),
      c.model.recompute == RecomputeMode::kNone        ? ""
      : c.model.recompute == RecomputeMode::kSelective ? ", selective recomputation"
                                                       : ", full recomputation");
  std::printf("  %5s  %-24s  %12s  %8s  %8s  %8s  %8s  %9s  %11s  %8s  %22s\n", "stage", "layers",
              "params/rank", "weights", "master", "AdamW", "grads", "in flight", "activations", "total",
              "total w/ fused attn");
  const StageRow* worst = &stages[0];
  for (const StageRow& s : stages) {
    const parallel::StaticBytes& b = s.bytes;
    std::printf("  %5lld  %-24s  %12s  %8.1f  %8.1f  %8.1f  %8.1f  %9lld  %11.1f  %8.1f  %22.1f\n",
                static_cast<long long>(s.stage), s.layers_text.c_str(),
                Short(static_cast<double>(s.params)).c_str(), b.weights / unit, b.master / unit,
                b.moments / unit, b.grads / unit, static_cast<long long>(s.in_flight), s.act / unit,
                s.total() / unit, s.total_fused() / unit);
    if (s.total() > worst->total()) worst = &s;
  }
  // The exact figure, for comparison with the run's own "static memory" line (rank 0 is stage 0).
  std::printf("  static bytes per rank (weights + master + AdamW + grads), stage 0: %lld\n",
              static_cast<long long>(stages[0].bytes.total()));
  // The activation estimate per stage, unrounded, for comparison with a run's "peak live
  // tensors" line (tests/cli/planner_vs_measured_test.py).
  for (const StageRow& s : stages) {
    std::printf("  activation bytes per rank, stage %lld: %.0f (with a fused attention kernel: %.0f)\n",
                static_cast<long long>(s.stage), s.act, s.act_fused);
  }
  if (p.zero == 3) {
    std::printf(
        "  zero 3: gathered units in flight, stage 0: at most %lld bytes (the largest %lld consecutive "
        "units: "
        "the one in use, parallel.zero3_prefetch = %lld ahead, one awaiting release%s), counted in the "
        "total\n",
        static_cast<long long>(stages[0].gathered), static_cast<long long>(p.zero3_prefetch + 2),
        static_cast<long long>(p.zero3_prefetch), c.model.tie_embeddings ? "; plus the tied embedding" : "");
  }
  std::printf(
      "  largest: stage %lld, %.1f %s (%.1f %s with a fused attention kernel, which never stores the "
      "s x s scores); each stage's %lld tp x %s%lld dp ranks hold the same\n",
      static_cast<long long>(worst->stage), worst->total() / unit, unit_name, worst->total_fused() / unit,
      unit_name, static_cast<long long>(p.tp), p.cp > 1 ? absl::StrCat(p.cp, " cp x ").c_str() : "",
      static_cast<long long>(dp));
}

// The step-time estimate of step_time_estimate.h, with what it assumes.
int PrintStepTime(const Config& c, const Layout& layout, const PipelinePlan& plan,
                  const std::vector<StageRow>& stages, const Hardware& hw) {
  auto e = EstimateStepTime(c, layout, plan, stages, hw);
  if (!e.ok()) return Invalid(e.status());
  std::printf(
      "step time, estimated (a model, not a measurement: tessera plan --help): %.3g s = pipeline %.3g s "
      "(%lld micro-batch(es)%s, tensor-parallel communication %.3g s of it) + data-parallel communication "
      "not hidden %.3g s + optimizer %.3g s\n",
      e->total_s, e->pipeline_s, static_cast<long long>(layout.microbatches),
      plan.schedule ? absl::StrFormat(", bubble %.1f%%", 100.0 * e->bubble).c_str() : "", e->tp_comm_s,
      e->dp_exposed_s, e->optimizer_s);
  std::printf("  %s tokens/s (%.0f per GPU); MFU %.1f%% (model FLOPs per token as the trainer counts them)\n",
              Short(e->tokens_per_s).c_str(), e->tokens_per_s / static_cast<double>(layout.world),
              100.0 * e->mfu);
  std::printf("  assuming %s; tp %s, pp %s, dp %s a node\n", DescribeHardware(hw).c_str(),
              e->tp_inside_node ? "inside" : "across", e->pp_inside_node ? "inside" : "across",
              e->dp_inside_node ? "inside" : "across");
  return kExitOk;
}

// Whether each corpus is on this machine (nothing is opened); returns the number missing.
int CheckData(const DataConfig& data) {
  int warnings = 0;
  const std::pair<const char*, const std::vector<CorpusEntry>*> sections[] = {{"data.train", &data.train},
                                                                              {"data.val", &data.val}};
  std::printf("data:\n");
  for (const auto& [section, corpora] : sections) {
    for (const CorpusEntry& e : *corpora) {
      auto shards = data::FindShardPrefixes(e.prefix);
      if (shards.ok()) {
        std::printf("  %s: %s (weight %g): found, %zu file pair(s)\n", section, e.prefix.c_str(), e.weight,
                    shards->size());
        continue;
      }
      ++warnings;
      std::printf("  %s: %s (weight %g): NOT FOUND on this machine\n", section, e.prefix.c_str(), e.weight);
      std::fflush(stdout);  // the warning follows its line when both go to one file
      std::fprintf(
          stderr,
          "tessera validate: warning: %s: no %s.idx or %s_00000.idx on this machine (fine if the cluster "
          "that runs it has the data there)\n",
          section, e.prefix.c_str(), e.prefix.c_str());
    }
  }
  return warnings;
}

std::vector<Flag> WithHardwareFlags(std::vector<Flag> flags) {
  for (Flag& f : HardwareFlags()) flags.push_back(std::move(f));
  return flags;
}

int Validate(const Args& args) {
  auto world = args.GetInt("world", 0, {.min = 1});
  if (!world.ok()) return Invalid(world.status());
  auto config = LoadConfigFromArgs(args);
  if (!config.ok()) return Invalid(config.status());
  const Config& c = *config;
  const std::string path = ConfigPath(args);
  std::printf("config: %s\n", path.empty() ? "(defaults and --set)" : path.c_str());
  PrintModel(c.model);
  auto layout = CheckLayout(c, *world);
  if (!layout.ok()) return Invalid(layout.status());
  PrintTraining(c, *layout);
  PrintLayout(c.parallel, *layout);
  auto pipeline = CheckPipeline(c, layout->microbatches);
  if (!pipeline.ok()) return Invalid(pipeline.status());
  PrintPipeline(c.parallel, *pipeline, layout->microbatches);
  // ZeRO shards over the dp x cp ranks that hold the same parameters.
  const int64_t replicas = layout->dp * c.parallel.cp;
  const std::vector<StageRow> stages = StageMemory(c, pipeline->partition, pipeline->peak, replicas);
  PrintMemory(c, stages, replicas);
  auto hardware = HardwareFromArgs(args, c);
  if (!hardware.ok()) return Invalid(hardware.status());
  if (const int rc = PrintStepTime(c, *layout, *pipeline, stages, *hardware); rc != kExitOk) return rc;
  const int warnings = CheckData(c.data);
  if (warnings > 0) {
    std::printf("valid, with %d warning(s)\n", warnings);
  } else {
    std::printf("valid\n");
  }
  return kExitOk;
}

}  // namespace

Command ValidateCommand() {
  return {.name = kName,
          .usage = "validate [CONFIG.yaml] [--world N] [--set key=value]... [machine flags of tessera plan]",
          .summary =
              "check a config (and with --world, its layout)\nwithout running: parameters, memory per "
              "rank,\npipeline bubble, data presence",
          .args = ConfigArgSpec(WithHardwareFlags({Flag::Value("world", "a positive integer")})),
          .run = Validate,
          .on_usage_error = [](const Command& command, const absl::Status& status) {
            ReportUsageError(command, status);
            std::printf("invalid\n");
            return kExitUsage;
          }};
}

}  // namespace tessera::cli
