// Parameters and memory per rank (memory_estimate.h).
#include "cli/memory_estimate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/sharding.h"
#include "parallel/data_parallel/bucket_layout.h"

namespace tessera::cli {

int64_t KvHeadsPerRank(const ModelConfig& m, int64_t tp) {
  return m.n_kv_heads >= tp ? m.n_kv_heads / tp : 1;
}

LayerShare LayerPerRank(const ModelConfig& m, int64_t tp) {
  const int64_t hd = m.head_dim();
  const int64_t attention = 2 * m.dim * (m.n_heads / tp) * hd + 2 * m.dim * KvHeadsPerRank(m, tp) * hd;
  return {attention + 3 * m.dim * (m.ffn_dim / tp), 2 * m.dim};
}

int64_t VocabRowsPerRank(const ModelConfig& m, int64_t tp) { return (m.vocab_size + tp - 1) / tp; }

namespace {

// The tensors of one micro-batch's pass on one rank, in bytes, as model/model.cc makes them. T is
// the micro-batch's tokens, T_r this rank's share of the residual stream (T / tp under sequence
// parallelism, else T), cb the compute dtype's bytes (2 for bf16, 4 for fp32).
struct Tensors {
  double stream = 0;   // the residual stream (fp32 whatever the precision): T_r x dim x 4
  double normed = 0;   // an RMSNorm's output, the next product's input: T_r x dim x cb
  double q = 0;        // T x (n_heads / tp) x head_dim x cb: rotated q, the attention output
  double kv = 0;       // T x (this rank's kv heads) x head_dim x cb: rotated k, v
  double ffn = 0;      // T x ffn_dim / tp x cb: gate, up, the SwiGLU values
  double rms = 0;      // the two RMSNorms' saved 1 / rms: 2 x T_r x 4
  double lse = 0;      // the flash kernel's log-sum-exp: T x n_heads / tp x 4
  double stacked = 0;  // fp32 off SP: the q|k|v and gate|up weights autograd's cat stacks and the
                       // product saves: (q + 2 kv + 2 ffn widths) x dim x 4
  double scores = 0;   // an unfused kernel's s x s scores: 5 a s^2 b / tp (Korthikanti), x 2 in fp32
  double w_down = 0;   // fp32 weights: w_down's gradient (a full replay returns it at its end),
                       // dim x ffn_dim / tp x 4
  // Context parallelism (cp > 1; T above is then this rank's T / cp tokens).
  bool context = false;
  double kv_all = 0;  // the gathered keys (or values) of the whole sequence: cp T x kv x cb
  double tables = 0;  // once per micro-batch: the per-token rotary tables (T x head_dim x 4)
  // Once per micro-batch: the plan's additive masks in the compute dtype, rows x c^2 x (2 cp + 1)
  // x cb (chunk l sees (g_l + 1) c keys; g_0 + g_1 = 2 cp - 1), which every layer's attention saves
  // (the same tensors) and a recomputation's plan holds.
  double plan_masks = 0;
};

// The tokens of one micro-batch on this rank: this rank's 2 chunks of every row under context
// parallelism.
double LocalTokens(const Config& c) {
  return static_cast<double>(c.train.seq_len * c.train.micro_batch) / static_cast<double>(c.parallel.cp);
}

// Context parallelism's tensors (model/model.cc AttentionImpl::Core, parallel/context_parallel/):
// the keys and values gathered and put in global order ([B, seq, kv, 2 head_dim], which attention
// saves through views), the additive masks of the plan ([rows, 1, c, (g + 1) c] per local chunk in
// the compute dtype, rows 1, or B with document masks), made once per micro-batch and saved by
// every layer's attention as they are, and the per-token rotary tables.
void AddContext(const Config& c, double kv_width, double cb, Tensors* t) {
  const double cp = static_cast<double>(c.parallel.cp);
  const double seq = static_cast<double>(c.train.seq_len);
  const double rows = c.data.document_mask ? static_cast<double>(c.train.micro_batch) : 1.0;
  const double chunk = seq / (2.0 * cp);
  const double mask_elements = rows * chunk * chunk * (2.0 * cp + 1.0);
  t->context = true;
  t->kv_all = seq * static_cast<double>(c.train.micro_batch) * kv_width * cb;
  t->tables = LocalTokens(c) * static_cast<double>(c.model.head_dim()) * 4.0;
  t->plan_masks = mask_elements * cb;
}

Tensors TensorsOf(const Config& c, int64_t tp) {
  const ModelConfig& m = c.model;
  const double tokens = LocalTokens(c);
  const bool sp = c.parallel.sequence_parallel && tp > 1;
  const double local = sp ? tokens / static_cast<double>(tp) : tokens;
  const bool fp32 = c.train.precision == Precision::kFp32;
  const double cb = fp32 ? 4.0 : 2.0;
  const double dim = static_cast<double>(m.dim);
  const double q_width = static_cast<double>(m.n_heads / tp * m.head_dim());
  const double kv_width = static_cast<double>(KvHeadsPerRank(m, tp) * m.head_dim());
  const double ffn_width = static_cast<double>(m.ffn_dim / tp);
  const double s = static_cast<double>(c.train.seq_len);
  Tensors t;
  t.stream = local * dim * 4.0;
  t.normed = local * dim * cb;
  t.q = tokens * q_width * cb;
  t.kv = tokens * kv_width * cb;
  t.ffn = tokens * ffn_width * cb;
  t.rms = 2.0 * local * 4.0;
  t.lse = tokens * static_cast<double>(m.n_heads / tp) * 4.0;
  // kernels::Linear stacks fp32 weights with autograd's cat (the bf16 paths keep the weights
  // themselves); the sequence-parallel column layer's product runs outside autograd.
  if (fp32 && !sp) t.stacked = (q_width + 2.0 * kv_width + 2.0 * ffn_width) * dim * 4.0;
  t.scores = 5.0 * static_cast<double>(m.n_heads) * s * tokens / static_cast<double>(tp) * (cb / 2.0);
  if (fp32) t.w_down = dim * ffn_width * 4.0;
  if (c.parallel.cp > 1) AddContext(c, kv_width, cb, &t);
  return t;
}

// What one layer keeps from forward to backward without recomputation, in creation order: its
// input (the attention norm's), the norm's output (q|k|v's input), q|k|v (v, a view of it, is
// saved by the attention kernel), rotated q and k and the attention output (the kernel's) with
// its log-sum-exp, the residual stream after attention (the MLP norm's input), that norm's output
// (gate|up's input), gate|up (SwiGLU's input), the SwiGLU values (w_down's input).
// Under context parallelism attention saves, instead of q|k|v, rotated k and the output: the
// gathered keys and values of the whole sequence, the two chunks' outputs and
// their concatenation in token order (w_o's input); q|k|v and rotated k are freed once gathered.
double LayerSaved(const Tensors& t, bool fused_attention) {
  if (t.context) {
    return t.stream + t.normed + t.q + 2.0 * t.kv_all + 2.0 * t.q + t.lse + t.stream + t.normed +
           3.0 * t.ffn + t.rms + t.stacked;
  }
  return t.stream + t.normed + (t.q + 2.0 * t.kv) + t.q + t.kv + t.q + t.lse + t.stream + t.normed +
         2.0 * t.ffn + t.ffn + t.rms + t.stacked + (fused_attention ? 0.0 : t.scores);
}

// Under selective recomputation the attention core (rotary, attention), SwiGLU and the two norms
// run again in backward: rotated q and k, the log-sum-exp, the scores, the SwiGLU values and the
// norms' outputs are not kept (the core's output is: it is w_o's input), and the q|k|v and
// gate|up products, folded with their norms (parallel/tensor_parallel/norm_column_linear.h), run
// outside autograd and keep no stacked fp32 weights.
double SelectiveLayerSaved(const Tensors& t) {
  if (t.context) return t.stream + (t.q + 2.0 * t.kv) + t.q + t.stream + 2.0 * t.ffn + t.rms;
  return LayerSaved(t, true) - t.q - t.kv - t.lse - t.ffn - 2.0 * t.normed - t.stacked;
}

}  // namespace

double LayerActivationBytes(const Config& c, int64_t tp, bool fused_attention) {
  return LayerSaved(TensorsOf(c, tp), fused_attention);
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

// The head and loss of one micro-batch: what it keeps until its backward (beside the final norm's
// input, the chunk's output) and the most its backward holds at once.
struct HeadBytes {
  double saved = 0;
  double backward = 0;
};

HeadBytes HeadOf(const Config& c, const Tensors& t, int64_t tp) {
  const ModelConfig& m = c.model;
  const double tokens = LocalTokens(c);
  const double rows = static_cast<double>(VocabRowsPerRank(m, tp));
  const double dim = static_cast<double>(m.dim);
  const bool fp32 = c.train.precision == Precision::kFp32;
  const double cb = fp32 ? 4.0 : 2.0;
  const bool chunked =
      (m.loss_chunk_tokens > 0 && tokens > static_cast<double>(m.loss_chunk_tokens)) || c.train.z_loss != 0.0;
  HeadBytes h;
  if (!chunked) {
    // LibTorch's cross-entropy keeps the fp32 log-softmax (VocabParallelCrossEntropy its
    // probabilities); its backward holds the gradients of the loss and of the log-softmax, the
    // vocab-parallel one's only the logits' gradient (fp32, and its bf16 copy).
    h.saved = t.normed + tokens * rows * 4.0;
    h.backward = tp > 1 ? tokens * rows * (fp32 ? 4.0 : 6.0) : 2.0 * tokens * rows * 4.0;
    return h;
  }
  // parallel/tensor_parallel/chunked_cross_entropy.cc keeps the final norm's output and log Z.
  // Its backward holds the hidden states' gradient (the whole sequence; under SP the gathered
  // hidden states too) and, per chunk, either the logits in the compute dtype beside their fp32
  // copy, or the fp32 logits' gradient (and its compute-dtype copy in bf16), the hidden chunk's
  // gradient and the head's fp32 weight gradient. An fp32 weight sums that gradient over the
  // chunks (from the second on, one more); a bf16 one adds it to its .grad.
  const double chunk =
      m.loss_chunk_tokens > 0 ? std::min(tokens, static_cast<double>(m.loss_chunk_tokens)) : tokens;
  const bool sp = c.parallel.sequence_parallel && tp > 1;
  const double weight_grad = rows * dim * 4.0;
  // One chunk of n tokens: the larger of its logits and its gradients.
  const auto chunk_peak = [&](double n) {
    return std::max(n * rows * (cb + 4.0), n * rows * (fp32 ? 4.0 : 6.0) + n * dim * cb + weight_grad);
  };
  // The chunks run in order; the sum exists from the second, which may be shorter.
  double chunks = chunk_peak(chunk);
  if (fp32 && tokens > chunk)
    chunks = std::max(chunks, chunk_peak(std::min(chunk, tokens - chunk)) + weight_grad);
  h.saved = t.normed + tokens * 4.0;
  h.backward = tokens * dim * cb * (sp ? 2.0 : 1.0) + chunks;
  return h;
}

// The most a layer's backward adds to what its micro-batch keeps: the first layer to run
// backward (the chunk's last) at its SwiGLU backward, which holds the residual stream's gradient
// (fp32), gate|up's gradient (2 ffn) and SwiGLU's output gradient and one product of it (ffn
// each), after w_down's backward freed the SwiGLU values (selective: formed again, and kept
// until the end: 5 ffn). The attention's backward comes after the layer's MLP activations are
// freed, and for Llama shapes (ffn_dim ~ 3 dim) holds less. Under full recomputation the
// replayed layer's activations (its input is the kept one), its output, and, in fp32, w_down's
// gradient, returned only when the replay's backward ends.
double LayerBackwardPeak(const Tensors& t, RecomputeMode mode, bool fused_attention) {
  switch (mode) {
    case RecomputeMode::kSelective:
      return t.stream + 5.0 * t.ffn;
    case RecomputeMode::kFull:  // the replayed layer's tensors (its input among them), its output
      return LayerSaved(t, fused_attention) + t.stream + 3.0 * t.ffn + t.w_down;
    default:
      return t.stream + 3.0 * t.ffn;
  }
}

// A stage's activation bytes at its peak: what its micro-batches in flight keep, plus the most
// one backward adds: the head's (on the last stage) or a layer's. A layer's comes after its
// micro-batch's head backward freed the head's tensors and the last layer's output.
double StageActivations(const Config& c, const StageRow& s, const Tensors& t, const HeadBytes& head,
                        bool fused_attention) {
  const ModelConfig& m = c.model;
  const double v = static_cast<double>(c.parallel.virtual_stages);
  const double chunk_layers = static_cast<double>(s.layers) / v;
  // Full recomputation: a recomputed layer keeps its input alone (the residual stream).
  double recomputed = 0.0;
  if (m.recompute == RecomputeMode::kFull) {
    recomputed = m.recompute_layers == 0 ? chunk_layers
                                         : std::min(chunk_layers, static_cast<double>(m.recompute_layers));
  }
  const double layer =
      m.recompute == RecomputeMode::kSelective ? SelectiveLayerSaved(t) : LayerSaved(t, fused_attention);
  // Per chunk and micro-batch in flight: the layers' tensors and the chunk's output (the
  // executor's, sent or kept; on the last chunk the final norm's input), and under context
  // parallelism the rotary tables and the plan's masks (saved by every layer's attention, or held
  // by a recomputation's plan).
  const double per_chunk =
      (chunk_layers - recomputed) * layer + recomputed * t.stream + t.stream + t.tables + t.plan_masks;
  // The head's tensors, per micro-batch in flight on the last chunk: all of the stage's without
  // virtual stages; interleaved, the last chunk runs each backward right after its forward.
  const double head_in_flight = s.head ? (v == 1.0 ? static_cast<double>(s.in_flight) : 1.0) : 0.0;
  double layer_peak = 0.0;
  if (recomputed < chunk_layers) {  // the layers kept whole come last: their backward runs first
    const RecomputeMode kept = m.recompute == RecomputeMode::kFull ? RecomputeMode::kNone : m.recompute;
    layer_peak = LayerBackwardPeak(t, kept, fused_attention);
  }
  if (recomputed > 0.0) {
    layer_peak = std::max(layer_peak, LayerBackwardPeak(t, RecomputeMode::kFull, fused_attention));
  }
  if (s.head) layer_peak -= head.saved + t.stream;
  // fp32, tied, embedding and head on this stage: the head's weight gradient waits in autograd's
  // buffer for the embedding's until the pass ends.
  if (c.train.precision == Precision::kFp32 && m.tie_embeddings && s.embedding && s.head) {
    layer_peak += static_cast<double>(VocabRowsPerRank(m, c.parallel.tp) * m.dim) * 4.0;
  }
  return static_cast<double>(s.in_flight) * per_chunk + head_in_flight * head.saved +
         std::max(s.head ? head.backward : 0.0, layer_peak);
}

}  // namespace

std::vector<StageRow> StageMemory(const Config& c, const parallel::pipeline::Partition& partition,
                                  const std::vector<int64_t>& peak_in_flight, int64_t dp) {
  const ModelConfig& m = c.model;
  const ParallelConfig& p = c.parallel;
  const bool bf16 = c.train.precision == Precision::kBf16;
  const Tensors t = TensorsOf(c, p.tp);
  const HeadBytes head = HeadOf(c, t, p.tp);
  std::vector<StageRow> stages;
  for (int64_t r = 0; r < p.pp; ++r) {
    StageRow s = StageLayers(p, partition, r);
    s.in_flight = peak_in_flight[r];
    const parallel::FlatLayout layout = StageFlatLayout(c, partition, r, dp, &s.params);
    s.bytes = parallel::StaticBytesOf(layout, static_cast<int>(p.zero), bf16);
    if (p.zero == 3) {
      s.gathered = parallel::GatheredUnitBound(layout, static_cast<int>(p.zero3_prefetch),
                                               m.tie_embeddings && s.embedding && s.head, bf16);
    }
    s.act = StageActivations(c, s, t, head, false);
    s.act_fused = StageActivations(c, s, t, head, true);
    stages.push_back(s);
  }
  return stages;
}

}  // namespace tessera::cli
