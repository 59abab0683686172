// Causal attention when a context-parallel group shares each sequence (chunks.h): every rank
// holds two chunks of every sequence's queries, keys and values. Keys and values are
// all-gathered over the group in forward (the grouped kv heads, before any expansion: under GQA
// they are a fraction of the queries' size) and their gradients reduce-scattered back in
// backward (parallel/tensor_parallel/mappings.h, GatherFromSequence). Each local query chunk
// then attends to the keys of the whole sequence up to its own end, with the causal mask at its
// global offset and, with packed documents, only within its document.
//
// Why an all-gather and not a ring (ring attention passes K/V blocks around while computing,
// hiding the transfer): it is one collective per layer, its mask can be anything (documents
// included), and under GQA the gathered K/V are small (Llama 3's choice). A ring would overlap
// the transfer with the attention and keep only two K/V blocks in memory instead of the whole
// sequence's, at the price of merging partial softmaxes by their log-sum-exp and a mask per
// block pair. docs/architecture.md has the discussion.
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>

#include "parallel/comm/communicator.h"
#include "parallel/context_parallel/chunks.h"

namespace tessera::parallel {

// What every layer's attention needs for one micro-batch under context parallelism, built once
// per forward.
struct ContextAttentionPlan {
  Communicator* group = nullptr;  // the context-parallel group (not owned)
  ContextChunks chunks;
  torch::Tensor gathered_to_global;  // int64 [seq] on the device (ContextChunks::GatheredIndexOfGlobal)
  // Per local chunk l: [rows or 1, 1, chunk, (GlobalChunk(l) + 1) x chunk] on the device, in the
  // attention's dtype: 0 where the query may see the key (causal at the chunk's offset, same
  // document), -inf elsewhere. Additive rather than bool because attention would otherwise form
  // (and save for backward) this float mask itself in every layer: built once here, every
  // layer's attention saves the same tensor (measured: the per-layer copies were 39-44% of a
  // rank's activations at the longest trainable sequences, docs/perf.md).
  std::array<torch::Tensor, 2> masks;
};

// `segments`: undefined (one causal sequence per row) or int64 [rows, seq] on the CPU, the
// document of each token of the whole row (data/document_layout.h). `dtype`: the attention
// inputs' (the masks are made in it).
ContextAttentionPlan PlanContextAttention(Communicator* group, const ContextChunks& chunks,
                                          const torch::Tensor& segments, torch::Device device,
                                          torch::ScalarType dtype);

// q: [batch, heads, local, head_dim]; k and v: [batch, kv_heads, local, head_dim] with heads a
// multiple of kv_heads; this rank's tokens in local order. Returns [batch, heads, local,
// head_dim]. Collective over plan.group in forward and in backward.
torch::Tensor ContextParallelAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const ContextAttentionPlan& plan);

}  // namespace tessera::parallel
