// `tessera validate` (validate_command.h). The checks are the ones `tessera train` makes before
// its first step: the config (ValidateConfig), the layout against the world size, the batch
// split over data-parallel ranks, the tensor-parallel divisibility of the MLP, the pipeline
// partition and the schedule (generated or read from its file, and simulated).
//
// The memory estimate per rank, in bytes, for the parameters P this rank holds:
//   weights 4 P (fp32 master weights), gradients 4 P (/ dp under parallel.zero 2), AdamW moments
//   8 P (/ dp under parallel.zero >= 1), activations per layer and micro-batch after Korthikanti
//   et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", 16-bit
//   activations, no recomputation): s b h (34 + 5 a s / h); with tensor parallelism t,
//   s b h (10 + 24 / t + 5 a s / (h t)); with sequence parallelism too, s b h (34 + 5 a s / h) / t.
//   fp32 runs store 4-byte activations: twice that. Times the layers on the rank and the
//   micro-batches in flight at the schedule's peak (1 without pipeline parallelism; the
//   simulated peak otherwise: pp on the first stage for 1F1B), plus the last stage's fp32 logits
//   for one micro-batch. The 5 a s / h term is the s x s attention scores; a fused (flash)
//   attention kernel, which LibTorch's scaled_dot_product_attention picks for bf16 on recent
//   GPUs, never stores them, so the estimate is printed with and without it. Communication
//   buffers, the allocator's fragmentation and the CUDA context are not counted.
#include "cli/validate_command.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "config/config.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "data/indexed_dataset.h"
#include "model/model.h"
#include "parallel/pipeline/partition.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/simulator.h"
#include "parallel/topology.h"

namespace tessera {
namespace {

namespace pl = parallel::pipeline;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = 1024.0 * kMiB;

struct ValidateArgs {
  std::string path;
  std::vector<std::string> overrides;
  int64_t world = 0;  // 0: not given
};

absl::StatusOr<ValidateArgs> ParseArgs(const std::vector<std::string>& args) {
  ValidateArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--set" || a == "--world") {
      if (i + 1 == args.size()) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
      const std::string& v = args[++i];
      if (a == "--set") {
        out.overrides.push_back(v);
      } else if (!absl::SimpleAtoi(v, &out.world) || out.world < 1) {
        return absl::InvalidArgumentError(absl::StrCat("--world expects a positive integer, got '", v, "'"));
      }
    } else if (a.rfind("--set=", 0) == 0) {
      out.overrides.push_back(a.substr(6));
    } else if (a.rfind("--world=", 0) == 0) {
      if (!absl::SimpleAtoi(a.substr(8), &out.world) || out.world < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("--world expects a positive integer, got '", a.substr(8), "'"));
      }
    } else if (a.rfind("-", 0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    } else if (out.path.empty()) {
      out.path = a;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", a, "' (one config file; overrides go after --set)"));
    }
  }
  return out;
}

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

// Parameters of one transformer layer on one of `tp` tensor-parallel ranks. Query heads and the
// MLP's hidden features split over the ranks; with fewer key/value heads than ranks each rank
// holds one (replicated); the two RMSNorm weights are replicated.
struct LayerShare {
  int64_t matmul = 0;
  int64_t norms = 0;
  int64_t total() const { return matmul + norms; }
};
LayerShare LayerPerRank(const ModelConfig& m, int64_t tp) {
  const int64_t hd = m.head_dim();
  const int64_t kv_heads = m.n_kv_heads >= tp ? m.n_kv_heads / tp : 1;
  const int64_t attention = 2 * m.dim * (m.n_heads / tp) * hd + 2 * m.dim * kv_heads * hd;
  return {attention + 3 * m.dim * (m.ffn_dim / tp), 2 * m.dim};
}

// Vocabulary rows per rank of the vocab-parallel embedding and head (padded to a multiple of tp).
int64_t VocabRowsPerRank(const ModelConfig& m, int64_t tp) { return (m.vocab_size + tp - 1) / tp; }

// Activation bytes of one layer for one micro-batch (the formula at the top of this file).
double LayerActivationBytes(const Config& c, int64_t tp, bool fused_attention) {
  const double s = static_cast<double>(c.train.seq_len);
  const double b = static_cast<double>(c.train.micro_batch);
  const double h = static_cast<double>(c.model.dim);
  const double a = static_cast<double>(c.model.n_heads);
  const double t = static_cast<double>(tp);
  const double scores = fused_attention ? 0.0 : 5.0 * a * s / h;
  double per_sbh;
  if (tp == 1) {
    per_sbh = 34.0 + scores;
  } else if (c.parallel.sequence_parallel) {
    per_sbh = (34.0 + scores) / t;
  } else {
    per_sbh = 10.0 + 24.0 / t + scores / t;
  }
  const double bytes = s * b * h * per_sbh;
  return c.train.precision == Precision::kFp32 ? 2.0 * bytes : bytes;
}

struct StageRow {
  int64_t stage = 0;
  std::string layers_text;
  int64_t layers = 0;
  bool embedding = false;
  bool head = false;
  int64_t params = 0;
  int64_t in_flight = 1;  // chunk activations at the schedule's peak
  double weights = 0, grads = 0, adam = 0, act = 0, act_fused = 0;
  double total() const { return weights + grads + adam + act; }
  double total_fused() const { return weights + grads + adam + act_fused; }
};

// The pipeline schedule the trainer would run: by name, or read from the file that
// parallel.pp_schedule names (which must match pp, virtual_stages and the micro-batch count).
absl::StatusOr<pl::Schedule> ScheduleOf(const Config& c, int64_t microbatches) {
  const ParallelConfig& p = c.parallel;
  const std::string name = p.pp_schedule.Text();
  if (p.pp_schedule.kind != PipelineScheduleKind::kFile) {
    auto s = pl::MakeSchedule(name, p.pp, microbatches, p.virtual_stages);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.pp_schedule = ", name, " with pp = ", p.pp, ", virtual_stages = ", p.virtual_stages,
          " and ", microbatches, " micro-batches per step: ", s.status().message()));
    }
    return s;
  }
  if (!PathExists(name)) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp_schedule = '", name,
                                                   "': neither a schedule (", pl::kScheduleNames,
                                                   ") nor an existing schedule file"));
  }
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(name));
  auto s = pl::ParseSchedule(text);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", s.status().message()));
  if (s->pp != p.pp || s->v != p.virtual_stages || s->microbatches != microbatches) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the schedule is for pp ", s->pp, ", ", s->v, " virtual stage(s), ",
                     s->microbatches, " micro-batches; the config asks for pp ", p.pp, ", ", p.virtual_stages,
                     ", ", microbatches, " (train.global_batch / (train.micro_batch x dp))"));
  }
  return s;
}

std::string Members(const std::vector<int64_t>& g) {
  if (g.size() <= 8) return absl::StrCat("[", absl::StrJoin(g, ","), "]");
  return absl::StrCat("[", g[0], ",", g[1], ",", g[2], ",", g[3], ",...,", g[g.size() - 2], ",", g.back(),
                      "]");
}

std::string LayoutSummary(const parallel::Topology& t) {
  std::string table = t.Table();
  std::string out = table.substr(0, table.find('\n') + 1);
  const std::pair<const char*, parallel::Dim> dims[] = {
      {"tp", parallel::Dim::kTensor}, {"pp", parallel::Dim::kPipeline}, {"dp", parallel::Dim::kData}};
  for (const auto& [label, dim] : dims) {
    const auto groups = t.Groups(dim);
    absl::StrAppend(&out, "  ", label, ": ", groups.size(), " group(s) of ", groups[0].size(),
                    " rank(s), the first ", Members(groups[0]), "\n");
  }
  absl::StrAppend(&out, "  model replica of rank 0: ", Members(t.ModelGroupOf(0)),
                  "; embedding group of rank 0: ", Members(t.EmbeddingGroupOf(0)), "\n");
  const int64_t last = t.world_size() - 1;
  const parallel::Coordinates c = t.CoordinatesOf(last);
  absl::StrAppend(&out, "  rank ", last, " is tp ", c.tp, " pp ", c.pp, " dp ", c.dp, "\n");
  return out;
}

int Invalid(const absl::Status& s) {
  std::fflush(stdout);  // the error follows what was printed before it when both go to one file
  std::fprintf(stderr, "tessera: error: %s\n", std::string(s.message()).c_str());
  std::printf("invalid\n");
  return kExitUsage;
}

}  // namespace

int ValidateCommand(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv);
  if (!args.ok()) return Invalid(args.status());
  auto loaded =
      args->path.empty() ? ConfigFromOverrides(args->overrides) : LoadConfig(args->path, args->overrides);
  if (!loaded.ok()) return Invalid(loaded.status());
  const Config& c = *loaded;
  const ModelConfig& m = c.model;
  const TrainConfig& tr = c.train;
  const ParallelConfig& p = c.parallel;
  std::printf("config: %s\n", args->path.empty() ? "(defaults and --set)" : args->path.c_str());

  // The model, whole.
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

  // The layout.
  int64_t world = args->world;
  std::string world_note;
  if (world == 0) {
    world = p.tp * p.pp * std::max<int64_t>(p.dp, 1);
    world_note =
        p.dp == 0 ? " (no --world and parallel.dp auto: assuming dp 1)" : " (tp x pp x dp; no --world)";
  }
  auto topology = parallel::Topology::Create(world, {p.tp, p.pp, p.dp}, EnumName(p.order));
  if (!topology.ok()) return Invalid(topology.status());
  const int64_t dp = topology->dims().dp;
  if (world > 1 && p.backend == CommBackend::kLocal) {
    return Invalid(absl::InvalidArgumentError(
        absl::StrCat("parallel.backend = local runs one process, but the world has ", world, " ranks")));
  }
  if (m.ffn_dim % p.tp != 0) {
    return Invalid(absl::InvalidArgumentError(
        absl::StrCat("model.ffn_dim = ", m.ffn_dim, " is not a multiple of parallel.tp = ", p.tp,
                     ": tensor parallelism splits the MLP's hidden features over the ranks")));
  }
  if (tr.global_batch % (tr.micro_batch * dp) != 0) {
    return Invalid(absl::InvalidArgumentError(absl::StrCat(
        "train.global_batch = ", tr.global_batch,
        " is not divisible by train.micro_batch x dp = ", tr.micro_batch, " x ", dp, " = ",
        tr.micro_batch * dp, ": each data-parallel rank needs whole micro-batches of the same count")));
  }
  const int64_t microbatches = tr.global_batch / (tr.micro_batch * dp);
  const int64_t tokens_per_step = tr.global_batch * tr.seq_len;
  std::printf(
      "training: %lld sequences x %lld tokens = %s tokens per step (%s over %lld steps); micro-batch %lld, "
      "%lld micro-batch(es) per step per data-parallel rank; %s, zero %lld%s\n",
      static_cast<long long>(tr.global_batch), static_cast<long long>(tr.seq_len),
      Grouped(tokens_per_step).c_str(),
      Short(static_cast<double>(tokens_per_step) * static_cast<double>(tr.steps)).c_str(),
      static_cast<long long>(tr.steps), static_cast<long long>(tr.micro_batch),
      static_cast<long long>(microbatches), EnumName(tr.precision).c_str(), static_cast<long long>(p.zero),
      p.sequence_parallel && p.tp > 1 ? ", sequence parallel" : "");
  std::printf("        lr %g (warm-up %lld steps, cosine to %g), weight decay %g, grad clip %g\n", tr.lr,
              static_cast<long long>(tr.warmup_steps), tr.min_lr, tr.weight_decay, tr.grad_clip);
  std::printf("layout: %s", LayoutSummary(*topology).c_str());
  if (!world_note.empty()) std::printf("  world %lld%s\n", static_cast<long long>(world), world_note.c_str());
  std::printf(
      "  every rank: tessera topology --world %lld --set parallel.tp=%lld --set parallel.pp=%lld --set "
      "parallel.order=%s\n",
      static_cast<long long>(world), static_cast<long long>(p.tp), static_cast<long long>(p.pp),
      EnumName(p.order).c_str());

  // The pipeline: partition and schedule.
  const double seq = static_cast<double>(tr.seq_len);
  // The trainer's stage costs (Trainer::SetupModel): FLOPs per token, forward and backward.
  const pl::StageCosts costs{
      6.0 * static_cast<double>(layer.matmul) + 12.0 * seq * static_cast<double>(m.dim), 0.0,
      6.0 * static_cast<double>(table)};
  auto partition = pl::BalancedPartition(m.n_layers, p.pp, p.virtual_stages, costs);
  if (!partition.ok()) {
    return Invalid(absl::InvalidArgumentError(
        absl::StrCat("pipeline partition of model.n_layers = ", m.n_layers, " over parallel.pp = ", p.pp,
                     " x virtual_stages = ", p.virtual_stages, ": ", partition.status().message())));
  }
  std::vector<int64_t> peak(p.pp, 1);
  if (p.pp > 1) {
    auto schedule = ScheduleOf(c, microbatches);
    if (!schedule.ok()) return Invalid(schedule.status());
    auto sim = pl::Simulate(*schedule, pl::ActionCosts::PerChunk(p.virtual_stages));
    if (!sim.ok())
      return Invalid(
          absl::InvalidArgumentError(absl::StrCat("parallel.pp_schedule: ", sim.status().message())));
    peak = sim->peak_live;
    std::printf(
        "pipeline: %s, %lld stages x %lld chunk(s), %lld micro-batches per step: bubble %.1f%% (simulated, "
        "backward = 2 x forward, free communication); micro-batches in flight at the peak, per stage: %s\n",
        p.pp_schedule.Text().c_str(), static_cast<long long>(p.pp), static_cast<long long>(p.virtual_stages),
        static_cast<long long>(microbatches), 100.0 * sim->bubble_fraction,
        absl::StrJoin(sim->peak_live, " ").c_str());
    if (p.virtual_stages > 1)
      std::printf("          (counted in chunks: each holds 1/%lld of a stage's layers)\n",
                  static_cast<long long>(p.virtual_stages));
  } else {
    std::printf("pipeline: none (pp 1): micro-batches run one after another, one in flight\n");
  }

  // Per pipeline stage: what each of its tp x dp ranks holds.
  const LayerShare layer_rank = LayerPerRank(m, p.tp);
  const int64_t rows = VocabRowsPerRank(m, p.tp);
  const double layer_act = LayerActivationBytes(c, p.tp, false);
  const double layer_act_fused = LayerActivationBytes(c, p.tp, true);
  const double logits = seq * static_cast<double>(tr.micro_batch) * static_cast<double>(rows) * 4.0;
  std::vector<StageRow> stages;
  for (int64_t r = 0; r < p.pp; ++r) {
    StageRow s;
    s.stage = r;
    for (int64_t chunk = 0; chunk < p.virtual_stages; ++chunk) {
      s.layers += partition->NumLayers(r, chunk);
      s.embedding = s.embedding || partition->HasEmbedding(r, chunk);
      s.head = s.head || partition->HasHead(r, chunk);
    }
    if (p.virtual_stages == 1) {
      const int64_t first = partition->FirstLayer(r, 0);
      s.layers_text = absl::StrCat("[", first, ", ", first + s.layers, ")");
    } else {
      s.layers_text = absl::StrCat(s.layers, " in ", p.virtual_stages, " chunks");
    }
    if (s.embedding) absl::StrAppend(&s.layers_text, " +emb");
    if (s.head) absl::StrAppend(&s.layers_text, " +head");
    s.params = s.layers * layer_rank.total() + (s.embedding ? rows * m.dim : 0) +
               (s.head ? m.dim + (!m.tie_embeddings || p.pp > 1 ? rows * m.dim : 0) : 0);
    s.in_flight = peak[r];
    const double P = static_cast<double>(s.params);
    s.weights = 4.0 * P;
    s.grads = 4.0 * P / (p.zero >= 2 ? static_cast<double>(dp) : 1.0);
    s.adam = 8.0 * P / (p.zero >= 1 ? static_cast<double>(dp) : 1.0);
    const double chunk_layers = static_cast<double>(s.layers) / static_cast<double>(p.virtual_stages);
    s.act = static_cast<double>(s.in_flight) * chunk_layers * layer_act + (s.head ? logits : 0.0);
    s.act_fused = static_cast<double>(s.in_flight) * chunk_layers * layer_act_fused + (s.head ? logits : 0.0);
    stages.push_back(s);
  }
  // GiB for real models, MiB for the small ones of CPU runs.
  double largest = 0;
  for (const StageRow& s : stages) largest = std::max(largest, s.total());
  const double unit = largest >= kGiB ? kGiB : kMiB;
  const char* unit_name = largest >= kGiB ? "GiB" : "MiB";
  std::printf(
      "memory per rank, %s (estimate: fp32 weights 4 B/param, gradients 4 B%s, AdamW 8 B%s; activations "
      "after Korthikanti et al.%s):\n",
      unit_name, p.zero >= 2 ? " / dp" : "", p.zero >= 1 ? " / dp" : "",
      p.tp > 1 ? (p.sequence_parallel ? " with tensor and sequence parallelism" : " with tensor parallelism")
               : "");
  std::printf("  %5s  %-24s  %12s  %8s  %8s  %8s  %9s  %11s  %8s  %22s\n", "stage", "layers", "params/rank",
              "weights", "grads", "AdamW", "in flight", "activations", "total", "total w/ fused attn");
  const StageRow* worst = &stages[0];
  for (const StageRow& s : stages) {
    std::printf("  %5lld  %-24s  %12s  %8.1f  %8.1f  %8.1f  %9lld  %11.1f  %8.1f  %22.1f\n",
                static_cast<long long>(s.stage), s.layers_text.c_str(),
                Short(static_cast<double>(s.params)).c_str(), s.weights / unit, s.grads / unit, s.adam / unit,
                static_cast<long long>(s.in_flight), s.act / unit, s.total() / unit, s.total_fused() / unit);
    if (s.total() > worst->total()) worst = &s;
  }
  std::printf(
      "  largest: stage %lld, %.1f %s (%.1f %s with a fused attention kernel, which never stores the "
      "s x s scores); each stage's %lld tp x %lld dp ranks hold the same\n",
      static_cast<long long>(worst->stage), worst->total() / unit, unit_name, worst->total_fused() / unit,
      unit_name, static_cast<long long>(p.tp), static_cast<long long>(dp));

  // The data: presence only (nothing is opened).
  int warnings = 0;
  const std::pair<const char*, const std::vector<CorpusEntry>*> sections[] = {{"data.train", &c.data.train},
                                                                              {"data.val", &c.data.val}};
  std::printf("data:\n");
  for (const auto& [section, corpora] : sections) {
    for (const CorpusEntry& e : *corpora) {
      auto shards = data::FindShardPrefixes(e.prefix);
      if (shards.ok()) {
        std::printf("  %s: %s (weight %g): found, %zu file pair(s)\n", section, e.prefix.c_str(), e.weight,
                    shards->size());
      } else {
        ++warnings;
        std::printf("  %s: %s (weight %g): NOT FOUND on this machine\n", section, e.prefix.c_str(), e.weight);
        std::fflush(stdout);  // the warning follows its line when both go to one file
        std::fprintf(
            stderr,
            "tessera: warning: %s: no %s.idx or %s_00000.idx on this machine (fine if the cluster that "
            "runs it has the data there)\n",
            section, e.prefix.c_str(), e.prefix.c_str());
      }
    }
  }
  if (warnings > 0) {
    std::printf("valid, with %d warning(s)\n", warnings);
  } else {
    std::printf("valid\n");
  }
  return kExitOk;
}

}  // namespace tessera
