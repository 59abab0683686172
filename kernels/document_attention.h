// Block-diagonal causal attention (data.document_mask): in a sequence of packed documents a
// token attends to the earlier tokens of its own document only. Two ways to run it with
// LibTorch's SDPA: one call per document (causal within it; the work of the documents alone,
// no mask in memory) or one call with a boolean [seq, seq] mask per row (any device; the
// kernels then do the full square, not the causal half). The CPU takes the per-document loop,
// measured faster (docs/perf.md); other devices the mask.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace tessera::kernels {

enum class DocumentAttentionPath { kAuto, kPerDocument, kMask };

// What the attention of every layer of one micro-batch needs, built once per forward.
struct DocumentAttentionPlan {
  bool per_document = false;
  // Per row, the first token of each document and then seq (per_document only).
  std::vector<std::vector<int64_t>> bounds;
  torch::Tensor mask;  // bool [batch, 1, seq, seq] on the device, true = may attend (the mask path)
};

// The keys each query may see: same segment and not in the future. segments: [batch, seq] int64.
// Returns bool [batch, 1, seq, seq] on segments' device.
torch::Tensor DocumentCausalMask(const torch::Tensor& segments);

// segments: [batch, seq] int64 on the CPU (data::DocumentLayout::segments), nondecreasing along
// each row. kAuto picks the per-document loop on the CPU and the mask elsewhere.
DocumentAttentionPlan PlanDocumentAttention(const torch::Tensor& segments, torch::Device device,
                                            DocumentAttentionPath path = DocumentAttentionPath::kAuto);

// q: [batch, heads, seq, head_dim], k and v: [batch, kv_heads, seq, head_dim] (kv_heads = heads
// unless enable_gqa). Returns [batch, heads, seq, head_dim], attention within each document.
torch::Tensor DocumentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const DocumentAttentionPlan& plan, bool enable_gqa);

}  // namespace tessera::kernels
