// The step-time model of step_time_estimate.h.
#include "cli/step_time_estimate.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "model/flops.h"
#include "parallel/pipeline/simulator.h"

namespace tessera::cli {
namespace {

namespace pl = parallel::pipeline;

// Whether every rank of `dim`'s group of rank 0 sits on one node of `per_node` GPUs (ranks are
// numbered node by node, as mpirun and Slurm place them).
bool InsideNode(const parallel::Topology& t, parallel::Dim dim, int64_t per_node) {
  const std::vector<int64_t> g = t.GroupOf(dim, 0);
  const auto [lo, hi] = std::minmax_element(g.begin(), g.end());
  return *lo / per_node == *hi / per_node;
}

// Ring collectives over `n` ranks moving `bytes` (the whole tensor) at `gb_s` per GPU.
double AllReduceS(double bytes, int64_t n, double gb_s) {
  return n <= 1 ? 0.0 : 2.0 * static_cast<double>(n - 1) / static_cast<double>(n) * bytes / (gb_s * 1e9);
}
double GatherS(double bytes, int64_t n, double gb_s) { return AllReduceS(bytes, n, gb_s) / 2.0; }

// The bandwidth per GPU of each group's collectives, GB/s (inside or across nodes).
struct Bandwidths {
  double tp = 0, dp = 0, cp = 0;
};

// One chunk's actions for one micro-batch: computation and tensor-parallel communication, in
// seconds; `weight` is the part of the backward that the split schedules run as W (the weight
// gradients: the matrix products' share, as much as their forward).
struct ChunkCost {
  double forward = 0, backward = 0, weight = 0, tp_comm = 0, gather = 0;
};

ChunkCost CostOfChunk(const Config& c, const pl::Partition& part, int64_t stage, int64_t chunk,
                      const Bandwidths& bw, int64_t dp, const Hardware& hw) {
  const ModelConfig& m = c.model;
  const ParallelConfig& p = c.parallel;
  const double tp_gb_s = bw.tp, dp_gb_s = bw.dp;
  // This rank's tokens of the micro-batch: 1/cp of each sequence under context parallelism.
  const double tokens = static_cast<double>(c.train.seq_len * c.train.micro_batch / p.cp);
  const double s = static_cast<double>(c.train.seq_len), h = static_cast<double>(m.dim);
  const double t = static_cast<double>(p.tp);
  const double layers = static_cast<double>(part.NumLayers(stage, chunk));
  const bool head = part.HasHead(stage, chunk), embedding = part.HasEmbedding(stage, chunk);
  const double matmul = 2.0 * static_cast<double>(LayerPerRank(m, p.tp).matmul);
  // q.k and the weighted sum of v: 2 x 2 x s flops per token and attention channel.
  const double attention = 4.0 * s * static_cast<double>(m.attention_dim()) / t;
  const double head_flops = head ? 2.0 * h * static_cast<double>(VocabRowsPerRank(m, p.tp)) : 0.0;
  const double rate = hw.peak_tflops * 1e12 * hw.gemm_efficiency;
  double recomputed = 0.0;  // flops per token run again in backward
  if (m.recompute == RecomputeMode::kFull) {
    const double n =
        m.recompute_layers == 0 ? layers : std::min(layers, static_cast<double>(m.recompute_layers));
    recomputed = n * (matmul + attention);
  } else if (m.recompute == RecomputeMode::kSelective) {
    recomputed = layers * attention;
  }
  ChunkCost cost;
  const double forward_flops = tokens * (layers * (matmul + attention) + head_flops);
  // Tensor-parallel collectives of one layer's forward: 2 all-reduces of the activations (or the
  // same volume as all-gathers and reduce-scatters under sequence parallelism).
  const double compute_bytes = c.train.precision == Precision::kBf16 ? 2.0 : 4.0;
  const double act_bytes = tokens * h * compute_bytes;
  const double layer_comm = 2.0 * AllReduceS(act_bytes, p.tp, tp_gb_s);
  const double regather = p.sequence_parallel ? 2.0 * GatherS(act_bytes, p.tp, tp_gb_s) : 0.0;
  const double replayed = m.recompute == RecomputeMode::kFull ? recomputed / (matmul + attention) : 0.0;
  const double forward_comm = layers * layer_comm + (embedding ? AllReduceS(act_bytes, p.tp, tp_gb_s) : 0.0);
  const double backward_comm = layers * (layer_comm + regather) + replayed * layer_comm;
  // Context parallelism: per layer the all-gather of the rank's K and V (its kv heads, the whole
  // sequence's worth) in forward, their gradients' reduce-scatter in backward; again in backward
  // where attention is replayed (recompute full or selective).
  const double kv_bytes = tokens * static_cast<double>(p.cp) * 2.0 *
                          static_cast<double>(KvHeadsPerRank(m, p.tp) * m.head_dim()) * compute_bytes;
  const double kv_gather = GatherS(kv_bytes, p.cp, bw.cp);
  const double cp_forward = layers * kv_gather;
  const double cp_backward =
      layers * kv_gather + (m.recompute == RecomputeMode::kNone ? 0.0 : layers * kv_gather);
  cost.forward = forward_flops / rate + forward_comm + cp_forward;
  cost.backward = (2.0 * forward_flops + tokens * recomputed) / rate + backward_comm + cp_backward;
  cost.weight = tokens * (layers * matmul + head_flops) / rate;
  cost.tp_comm = forward_comm + backward_comm;
  if (p.zero == 3) {
    const double params = layers * static_cast<double>(LayerPerRank(m, p.tp).total()) +
                          (head || embedding ? h * static_cast<double>(VocabRowsPerRank(m, p.tp)) : 0.0);
    cost.gather = GatherS(params * compute_bytes, dp, dp_gb_s);
  }
  return cost;
}

// The slowest chunk's costs: the simulator gives every chunk the same.
ChunkCost SlowestChunk(const Config& c, const pl::Partition& part, const Bandwidths& bw, int64_t dp,
                       const Hardware& hw) {
  ChunkCost worst;
  for (int64_t stage = 0; stage < c.parallel.pp; ++stage) {
    for (int64_t chunk = 0; chunk < c.parallel.virtual_stages; ++chunk) {
      const ChunkCost cost = CostOfChunk(c, part, stage, chunk, bw, dp, hw);
      if (cost.forward + cost.backward > worst.forward + worst.backward) worst = cost;
    }
  }
  return worst;
}

}  // namespace

Hardware DefaultHardware(const Config& c) {
  Hardware hw;
  if (c.train.peak_tflops > 0) {
    hw.peak_tflops = c.train.peak_tflops;
    hw.peak_basis = "train.peak_tflops";
  } else {
    const bool bf16 = c.train.precision == Precision::kBf16;
    hw.peak_tflops = bf16 ? 989.0 : 494.5;
    hw.peak_basis = bf16 ? "H100/H200 SXM data sheet, dense bf16" : "H100/H200 SXM data sheet, dense TF32";
  }
  return hw;
}

absl::StatusOr<StepTimeEstimate> EstimateStepTime(const Config& c, const Layout& layout,
                                                  const PipelinePlan& plan,
                                                  const std::vector<StageRow>& stages, const Hardware& hw) {
  const ParallelConfig& p = c.parallel;
  StepTimeEstimate e;
  e.tp_inside_node = InsideNode(layout.topology, parallel::Dim::kTensor, hw.gpus_per_node);
  e.pp_inside_node = InsideNode(layout.topology, parallel::Dim::kPipeline, hw.gpus_per_node);
  e.dp_inside_node = InsideNode(layout.topology, parallel::Dim::kData, hw.gpus_per_node);
  const auto bw = [&](bool inside) { return inside ? hw.intra_node_gb_s : hw.inter_node_gb_s; };
  const double dp_gb_s = bw(e.dp_inside_node);
  const Bandwidths bandwidths{bw(e.tp_inside_node), dp_gb_s,
                              bw(InsideNode(layout.topology, parallel::Dim::kContext, hw.gpus_per_node))};
  // Gradients are reduced, and ZeRO shards, over the dp x cp ranks holding the same parameters.
  const int64_t replicas = layout.dp * p.cp;
  const ChunkCost chunk = SlowestChunk(c, plan.partition, bandwidths, replicas, hw);
  e.forward_s = std::max(chunk.forward, chunk.gather);
  e.backward_s = std::max(chunk.backward, chunk.gather);
  const double m = static_cast<double>(layout.microbatches);
  const double v = static_cast<double>(p.virtual_stages);
  e.tp_comm_s = m * v * chunk.tp_comm;
  if (!plan.schedule.has_value()) {
    e.pipeline_s = m * (e.forward_s + e.backward_s);
  } else {
    pl::ActionCosts costs;
    costs.forward = e.forward_s;
    costs.backward = e.backward_s;
    costs.backward_weight = chunk.weight;
    costs.backward_input = std::max(e.backward_s - chunk.weight, 0.0);
    const double tokens = static_cast<double>(c.train.seq_len * c.train.micro_batch);
    const double boundary = tokens * static_cast<double>(c.model.dim) * 4.0 / static_cast<double>(p.cp) /
                            (p.sequence_parallel ? static_cast<double>(p.tp) : 1.0);
    costs.comm = boundary / (bw(e.pp_inside_node) * 1e9);
    auto sim = pl::Simulate(*plan.schedule, costs);
    if (!sim.ok()) return sim.status();
    e.pipeline_s = sim->makespan;
    e.bubble = sim->bubble_fraction;
  }
  // Once per step, on the stage with the most parameters.
  int64_t params = 0;
  for (const StageRow& s : stages) params = std::max(params, s.params);
  const double grads = 4.0 * static_cast<double>(params);
  const double weights = (c.train.precision == Precision::kBf16 ? 2.0 : 4.0) * static_cast<double>(params);
  const double reduce =
      p.zero == 0 ? AllReduceS(grads, replicas, dp_gb_s) : GatherS(grads, replicas, dp_gb_s);
  e.dp_exposed_s = std::max(0.0, reduce - v * e.backward_s);
  if (p.zero == 1 || p.zero == 2) e.dp_exposed_s += GatherS(weights, replicas, dp_gb_s);
  const double owned = static_cast<double>(params) / (p.zero >= 1 ? static_cast<double>(replicas) : 1.0);
  e.optimizer_s = 32.0 * owned / (hw.memory_gb_s * 1e9);
  e.total_s = e.pipeline_s + e.dp_exposed_s + e.optimizer_s;
  const double tokens_per_step = static_cast<double>(c.train.global_batch * c.train.seq_len);
  const double model_flops = TrainingFlopsPerToken(c.model, c.train.seq_len) * tokens_per_step;
  e.mfu = model_flops / (static_cast<double>(layout.world) * e.total_s * hw.peak_tflops * 1e12);
  e.tokens_per_s = tokens_per_step / e.total_s;
  return e;
}

}  // namespace tessera::cli
