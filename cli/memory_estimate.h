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
// a tied head), which is reported beside the static bytes; and an estimate of the activations per layer and
// micro-batch after Korthikanti
//   et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", 16-bit
//   activations, no recomputation): s b h (34 + 5 a s / h); with tensor parallelism t,
//   s b h (10 + 24 / t + 5 a s / (h t)); with sequence parallelism too, s b h (34 + 5 a s / h) / t.
//   fp32 runs store 4-byte activations: twice that. Times the layers on the rank and the
//   micro-batches in flight at the schedule's peak (1 without pipeline parallelism; the
//   simulated peak otherwise: pp on the first stage for 1F1B), plus the last stage's logits for
//   one micro-batch: tokens x vocab/tp x (compute dtype + fp32 copy + fp32 log-softmax), or with
//   the chunked head + loss one chunk's: chunk x vocab/tp x (compute dtype + fp32 copy).
//   Under model.recompute: selective the scores term is dropped (the attention core runs again
//   in backward) and so are the SwiGLU values, tokens x ffn_dim / t in the compute dtype.
//   Under model.recompute: full each recomputed layer keeps only its input instead, 4 s b h
//   bytes (the fp32 residual stream; / t under sequence parallelism), and the backward holds one
//   layer's activations once more while it recomputes. The 5 a s / h term is the s x s
//   attention scores; a fused (flash) attention kernel, which LibTorch's
//   scaled_dot_product_attention picks for bf16 on recent
//   GPUs, never stores them, so the estimate is given with and without it. Communication
//   buffers, the allocator's fragmentation and the CUDA context are not counted.
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

// Vocabulary rows per rank of the vocab-parallel embedding and head (padded to a multiple of tp).
int64_t VocabRowsPerRank(const ModelConfig& m, int64_t tp);

// Activation bytes of one layer for one micro-batch (the formula above).
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
