// Parameters and memory per rank (memory_estimate.h).
#include "cli/memory_estimate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/sharding.h"
#include "parallel/data_parallel/bucket_layout.h"

namespace tessera::cli {

LayerShare LayerPerRank(const ModelConfig& m, int64_t tp) {
  const int64_t hd = m.head_dim();
  const int64_t kv_heads = m.n_kv_heads >= tp ? m.n_kv_heads / tp : 1;
  const int64_t attention = 2 * m.dim * (m.n_heads / tp) * hd + 2 * m.dim * kv_heads * hd;
  return {attention + 3 * m.dim * (m.ffn_dim / tp), 2 * m.dim};
}

int64_t VocabRowsPerRank(const ModelConfig& m, int64_t tp) { return (m.vocab_size + tp - 1) / tp; }

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

namespace {

// The stage's layers, whether it holds the embedding and the head, and their description.
StageRow StageLayers(const ParallelConfig& p, const parallel::pipeline::Partition& partition, int64_t stage) {
  StageRow s;
  s.stage = stage;
  for (int64_t chunk = 0; chunk < p.virtual_stages; ++chunk) {
    s.layers += partition.NumLayers(stage, chunk);
    s.embedding = s.embedding || partition.HasEmbedding(stage, chunk);
    s.head = s.head || partition.HasHead(stage, chunk);
  }
  if (p.virtual_stages == 1) {
    const int64_t first = partition.FirstLayer(stage, 0);
    s.layers_text = absl::StrCat("[", first, ", ", first + s.layers, ")");
  } else {
    s.layers_text = absl::StrCat(s.layers, " in ", p.virtual_stages, " chunks");
  }
  if (s.embedding) absl::StrAppend(&s.layers_text, " +emb");
  if (s.head) absl::StrAppend(&s.layers_text, " +head");
  return s;
}

// The flat buffers of TP rank 0 of `stage` (every rank of a stage holds the same sizes), laid out
// as the trainer's gradient reducer lays them out.
parallel::FlatLayout StageFlatLayout(const Config& c, const parallel::pipeline::Partition& partition,
                                     int64_t stage, int64_t dp, int64_t* params) {
  const ParallelConfig& p = c.parallel;
  const bool sp = p.sequence_parallel && p.tp > 1;
  std::vector<std::vector<ParameterInfo>> chunks;
  for (const ModelShardOptions& shard : ChunkShardOptions(partition, stage, nullptr, sp)) {
    chunks.push_back(ChunkParameterLayouts(c.model, shard, static_cast<int>(p.tp), 0));
  }
  const ShardingContext context{p.tp, p.pp, sp, c.train.decay_norms_and_embeddings};
  std::vector<parallel::FlatParameter> flat;
  *params = 0;
  for (const PlannedParameter& planned : PlanParameters(chunks, c.model, context)) {
    int64_t numel = 1;
    for (int64_t d : LocalShape({planned.info.shard, planned.info.global_shape})) numel *= d;
    flat.push_back({numel, planned.role.decay, planned.role.late, planned.unit, planned.fuse_with_next});
    *params += numel;
  }
  return parallel::LayOutFlatBuffers(flat, static_cast<int>(dp), p.bucket_mb, p.zero == 3);
}

}  // namespace

std::vector<StageRow> StageMemory(const Config& c, const parallel::pipeline::Partition& partition,
                                  const std::vector<int64_t>& peak_in_flight, int64_t dp) {
  const ModelConfig& m = c.model;
  const ParallelConfig& p = c.parallel;
  const int64_t rows = VocabRowsPerRank(m, p.tp);
  const int64_t tokens = c.train.seq_len * c.train.micro_batch;
  const double compute_bytes = c.train.precision == Precision::kBf16 ? 2.0 : 4.0;
  double layer_act = LayerActivationBytes(c, p.tp, false);
  double layer_act_fused = LayerActivationBytes(c, p.tp, true);
  if (m.recompute == RecomputeMode::kSelective) {
    // The attention core runs again in backward, so no scores are kept whatever the kernel; the
    // SwiGLU values (tokens x ffn_dim / tp in the compute dtype) are formed again too.
    const double swiglu = static_cast<double>(tokens) * static_cast<double>(m.ffn_dim / p.tp) * compute_bytes;
    layer_act = layer_act_fused = std::max(0.0, layer_act_fused - swiglu);
  }
  // The head's logits per micro-batch: whole, in the compute dtype, as an fp32 copy and as the
  // fp32 log-softmax saved for backward; chunked (model.loss_chunk_tokens), one chunk at a time
  // in the compute dtype and one fp32 copy (parallel/tensor_parallel/chunked_cross_entropy.h).
  const int64_t chunk = m.loss_chunk_tokens;
  const bool chunked = chunk > 0 && tokens > chunk;
  const double logits = static_cast<double>(chunked ? chunk : tokens) * static_cast<double>(rows) *
                        (chunked ? compute_bytes + 4.0 : compute_bytes + 8.0);
  std::vector<StageRow> stages;
  for (int64_t r = 0; r < p.pp; ++r) {
    StageRow s = StageLayers(p, partition, r);
    s.in_flight = peak_in_flight[r];
    const parallel::FlatLayout layout = StageFlatLayout(c, partition, r, dp, &s.params);
    const bool bf16 = c.train.precision == Precision::kBf16;
    s.bytes = parallel::StaticBytesOf(layout, static_cast<int>(p.zero), bf16);
    if (p.zero == 3) {
      s.gathered = parallel::GatheredUnitBound(layout, static_cast<int>(p.zero3_prefetch),
                                               m.tie_embeddings && s.embedding && s.head, bf16);
    }
    const double chunk_layers = static_cast<double>(s.layers) / static_cast<double>(p.virtual_stages);
    // Full recomputation: a recomputed block keeps its input alone (the fp32 residual stream,
    // this rank's sequence block under SP) per micro-batch in flight; its backward holds one
    // block's activations again, once.
    double recomputed = 0.0;
    if (m.recompute == RecomputeMode::kFull) {
      recomputed = m.recompute_layers == 0 ? chunk_layers
                                           : std::min(chunk_layers, static_cast<double>(m.recompute_layers));
    }
    const double input_bytes = static_cast<double>(tokens) * static_cast<double>(m.dim) * 4.0 /
                               (p.sequence_parallel && p.tp > 1 ? static_cast<double>(p.tp) : 1.0);
    const auto activations = [&](double per_layer) {
      return static_cast<double>(s.in_flight) *
                 ((chunk_layers - recomputed) * per_layer + recomputed * input_bytes) +
             (recomputed > 0 ? per_layer : 0.0) + (s.head ? logits : 0.0);
    };
    s.act = activations(layer_act);
    s.act_fused = activations(layer_act_fused);
    stages.push_back(s);
  }
  return stages;
}

}  // namespace tessera::cli
