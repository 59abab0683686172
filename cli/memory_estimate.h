// The arithmetic behind `tessera validate`'s size and memory figures: parameters per rank under
// tensor and pipeline parallelism, and a per-rank memory estimate per pipeline stage.
//
// The memory per rank, in bytes: the static part exactly, as the trainer allocates it (the flat
// buffers of parallel/data_parallel/bucket_layout.h over the parameters this rank holds, F
// elements with padding): weights 4F (fp32) or 2F (bf16), the fp32 master of bf16 weights 4F,
// AdamW moments 8F, both / dp under parallel.zero >= 1, gradients 4F (zero 0), 4F + 4F/dp
// (zero 1), 4F/dp (zero 2 and 3); at zero 3 the weights are 4F/dp or 2F/dp (the shards) plus the
// late bucket whole, and the units gathered for use add at most bucket_layout.h's
// GatheredUnitBound (the largest zero3_prefetch + 2 consecutive units, plus the embedding under
// a tied head), which is reported beside the static bytes; and the activations.
//
// The activations are counted tensor by tensor, as model/model.cc and its kernels keep them, and
// checked against the bytes of live tensors a run allocates (tests/trainer/planner_vs_measured_test.py,
// docs/perf.md). T is a micro-batch's tokens on this rank (seq x micro_batch / cp: under context
// parallelism each rank holds 2 chunks of every row), T_r this rank's share of the residual stream
// (T / tp under sequence parallelism, else T), cb the compute dtype's bytes, q and kv the widths of this
// rank's query and key/value heads (n_heads / tp x head_dim; max(1, n_kv_heads / tp) x head_dim),
// f = ffn_dim / tp, V = the vocabulary rows per rank.
//   One layer keeps (recompute none): its input and the residual after attention (fp32: 2 x T_r
//   dim 4), the two RMSNorm outputs (2 x T_r dim cb) and 1/rms (2 x T_r 4), q|k|v (T (q + 2 kv) cb:
//   v, a view of it, is saved by the attention kernel), rotated q and k and the attention output
//   (T (2q + kv) cb) with its log-sum-exp (T heads/tp 4), gate|up and the SwiGLU values (3 T f cb);
//   in fp32 off sequence parallelism also the q|k|v and gate|up weights that autograd's cat stacks
//   ((q + 2 kv + 2 f) dim 4). Without a fused (flash) kernel the s x s scores too, Korthikanti et al.
//   2022's 5 a s^2 b / tp (16-bit; x 2 in fp32). selective drops rotated q and k, the log-sum-exp,
//   the SwiGLU values and the two norm outputs (formed again in backward), and with the norms
//   folded into their products the stacked fp32 weights; full keeps the input alone (T_r dim 4).
//   Under context parallelism (cp > 1) attention keeps, instead of q|k|v, rotated k and the
//   output: rotated q (T q cb), the keys and values gathered over the group and put in global
//   order, which it saves through views (2 cp T kv cb: the whole sequence's), the two chunks'
//   outputs and their concatenation in token order (2 T q cb, w_o's input) and the
//   log-sum-exps; q|k|v and rotated k are freed once gathered. Selective keeps q|k|v and the
//   output as without cp. Once per micro-batch the per-token rotary tables (T head_dim 4) and the
//   plan's additive masks in the compute dtype (rows c^2 (2 cp + 1) cb, c = seq / 2 cp the chunk,
//   rows 1 or micro_batch with document masks: chunk l sees (g_l + 1) c keys and g_0 + g_1 =
//   2 cp - 1), which every layer's attention saves as they are (one copy, not one per layer). The head,
//   loss and MLP see T tokens as above; only the gathered K/V and the masks do not shrink with cp. A chunk of
//   layers keeps its output too (T_r dim 4: sent or kept by the pipeline executor; on the last chunk the
//   final norm's input), and the head its input, the final norm's output (T_r dim cb), and log Z (T 4) with
//   the chunked loss, or the fp32 log-softmax (T V 4) without. All of that per micro-batch in flight at the
//   schedule's peak (1 without pipeline parallelism; the simulated peak otherwise: pp on the first stage for
//   1F1B). Plus the most one backward adds, once: on the last stage the chunked loss's backward, the hidden
//   states' gradient (T dim cb; under sequence parallelism the gathered hidden states too) and the larger of
//   one chunk's logits in the compute dtype beside their fp32 copy (chunk V (cb + 4)) and the chunk's fp32
//   logit gradient (and its compute-dtype copy), hidden gradient and the head's fp32 weight gradient (V dim
//   4), with an fp32 head's gradient summed over chunks (V dim 4) from the second chunk (the chunks run in
//   order; the second may be shorter); without chunks the loss's and log-softmax's gradients (2 T V 4; under
//   tp > 1 the vocab-parallel loss's logit gradient, T V 4, and its bf16 copy). Or a layer's backward, at its
//   SwiGLU backward: the residual stream's gradient (T_r dim 4) and 3 T f cb (gate|up's and the SwiGLU
//   values' gradients and a product of them, the values freed), 5 T f cb under selective (the values formed
//   again); under full the replayed layer's activations, its output and, in fp32, w_down's gradient. Not
//   counted: communication buffers, the allocator's fragmentation, the CUDA context, and what the CPU's bf16
//   weight-gradient products add: they multiply fp32 copies of their bf16 operands, so the loss chunk's
//   backward holds one more fp32 chunk of logit gradients (chunk V 4), which the CUDA kernels do not
//   (measured on the CPU: bf16 runs 16% (none) to 43% (full) above the estimate). On CUDA with grouped kv
//   heads the attention kernel saves k and v expanded to the query heads (3q instead of 2q + 3 kv under
//   recompute none; under cp the gathered K/V expanded: 2 cp T q cb instead of 2 cp T kv cb).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "parallel/data_parallel/bucket_layout.h"
#include "parallel/pipeline/partition.h"

namespace tessera::cli {

// Parameters of one transformer layer on one of `tp` tensor-parallel ranks. Query heads and the
// MLP's hidden features split over the ranks; with fewer key/value heads than ranks each rank
// holds one (replicated); the two RMSNorm weights are replicated.
struct LayerShare {
  int64_t matmul = 0;
  int64_t norms = 0;
  int64_t total() const { return matmul + norms; }
};
LayerShare LayerPerRank(const ModelConfig& m, int64_t tp);

// Key/value heads per rank: split over the ranks, or one (replicated) when there are fewer than tp.
int64_t KvHeadsPerRank(const ModelConfig& m, int64_t tp);

// Vocabulary rows per rank of the vocab-parallel embedding and head (padded to a multiple of tp).
int64_t VocabRowsPerRank(const ModelConfig& m, int64_t tp);

// Activation bytes one layer keeps for one micro-batch without recomputation (the count above).
double LayerActivationBytes(const Config& c, int64_t tp, bool fused_attention);

// What each tp x dp rank of one pipeline stage holds, in bytes.
struct StageRow {
  int64_t stage = 0;
  std::string layers_text;  // "[0, 4) +emb", "6 in 2 chunks +head"
  int64_t layers = 0;
  bool embedding = false;
  bool head = false;
  int64_t params = 0;
  int64_t in_flight = 1;        // chunk activations at the schedule's peak
  parallel::StaticBytes bytes;  // weights, master, moments, gradients: exact
  int64_t gathered = 0;         // zero 3: the most bytes of units gathered at once (a bound)
  double act = 0, act_fused = 0;
  double total() const { return static_cast<double>(bytes.total() + gathered) + act; }
  double total_fused() const { return static_cast<double>(bytes.total() + gathered) + act_fused; }
};

// One row per pipeline stage, for the layers `partition` gives it and `peak_in_flight[stage]`
// micro-batches in flight, with `dp` data-parallel ranks sharing the optimizer state.
std::vector<StageRow> StageMemory(const Config& c, const parallel::pipeline::Partition& partition,
                                  const std::vector<int64_t>& peak_in_flight, int64_t dp);

}  // namespace tessera::cli
