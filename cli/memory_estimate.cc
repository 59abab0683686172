// Parameters and memory per rank (memory_estimate.h).
#include "cli/memory_estimate.h"

#include "absl/strings/str_cat.h"

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

}  // namespace

std::vector<StageRow> StageMemory(const Config& c, const parallel::pipeline::Partition& partition,
                                  const std::vector<int64_t>& peak_in_flight, int64_t dp) {
  const ModelConfig& m = c.model;
  const ParallelConfig& p = c.parallel;
  const LayerShare layer_rank = LayerPerRank(m, p.tp);
  const int64_t rows = VocabRowsPerRank(m, p.tp);
  const double layer_act = LayerActivationBytes(c, p.tp, false);
  const double layer_act_fused = LayerActivationBytes(c, p.tp, true);
  const double logits = static_cast<double>(c.train.seq_len) * static_cast<double>(c.train.micro_batch) *
                        static_cast<double>(rows) * 4.0;
  std::vector<StageRow> stages;
  for (int64_t r = 0; r < p.pp; ++r) {
    StageRow s = StageLayers(p, partition, r);
    s.params = s.layers * layer_rank.total() + (s.embedding ? rows * m.dim : 0) +
               (s.head ? m.dim + (!m.tie_embeddings || p.pp > 1 ? rows * m.dim : 0) : 0);
    s.in_flight = peak_in_flight[r];
    const double P = static_cast<double>(s.params);
    s.weights = 4.0 * P;
    s.grads = 4.0 * P / (p.zero >= 2 ? static_cast<double>(dp) : 1.0);
    s.adam = 8.0 * P / (p.zero >= 1 ? static_cast<double>(dp) : 1.0);
    const double chunk_layers = static_cast<double>(s.layers) / static_cast<double>(p.virtual_stages);
    s.act = static_cast<double>(s.in_flight) * chunk_layers * layer_act + (s.head ? logits : 0.0);
    s.act_fused = static_cast<double>(s.in_flight) * chunk_layers * layer_act_fused + (s.head ? logits : 0.0);
    stages.push_back(s);
  }
  return stages;
}

}  // namespace tessera::cli
