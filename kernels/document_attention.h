// Block-diagonal causal attention (data.document_mask): in a sequence of packed documents a
// token attends to the earlier tokens of its own document only. Three ways to run it: one SDPA
// call per document (causal within it; the work of the documents alone, no mask in memory); on
// CUDA, LibTorch's variable-length flash kernel over all documents of the micro-batch at once
// (`at::_flash_attention_forward` with cumulative document lengths, as flash-attn's
// varlen API: one launch, the causal triangles only, grouped kv heads read in place); or one
// SDPA call with a boolean [seq, seq] mask per row (any device and dtype; the kernels then do
// the full square, not the causal half). The CPU takes the per-document loop, measured faster
// (docs/perf.md); CUDA the variable-length kernel wherever LibTorch's flash kernel takes the
// inputs (bf16 or fp16, a head width it supports, flash not disabled by
// model.attention_backend), else the mask.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace tessera::kernels {

enum class DocumentAttentionPath { kAuto, kPerDocument, kMask, kVarlen };

// What the attention of every layer of one micro-batch needs, built once per forward.
struct DocumentAttentionPlan {
  bool per_document = false;
  // Per row, the first token of each document and then seq (per_document only).
  std::vector<std::vector<int64_t>> bounds;
  torch::Tensor mask;  // bool [batch, 1, seq, seq] on the device, true = may attend (kMask)
  // Off the CPU, unless kMask or kPerDocument is asked: the documents of all rows in order as
  // int32 offsets into the batch x seq tokens ([documents + 1], on the device), the longest
  // document, and the segments on the device to build the mask from where flash cannot run.
  torch::Tensor cu_seqlens;
  int64_t max_document = 0;
  torch::Tensor segments;
};

// Whether DocumentAttention runs q, k, v of `plan` through the variable-length flash kernel:
// the plan has offsets and LibTorch's flash kernel takes these inputs.
bool UsesVarlenFlash(const DocumentAttentionPlan& plan, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v, bool enable_gqa);

// The keys each query may see: same segment and not in the future. segments: [batch, seq] int64.
// Returns bool [batch, 1, seq, seq] on segments' device.
torch::Tensor DocumentCausalMask(const torch::Tensor& segments);

// segments: [batch, seq] int64 on the CPU (data::DocumentLayout::segments), nondecreasing along
// each row. kAuto picks the per-document loop on the CPU, and elsewhere the variable-length
// kernel (falling back to the mask, built when first needed, where it cannot run).
DocumentAttentionPlan PlanDocumentAttention(const torch::Tensor& segments, torch::Device device,
                                            DocumentAttentionPath path = DocumentAttentionPath::kAuto);

// q: [batch, heads, seq, head_dim], k and v: [batch, kv_heads, seq, head_dim] (kv_heads = heads
// unless enable_gqa). Returns [batch, heads, seq, head_dim], attention within each document.
torch::Tensor DocumentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const DocumentAttentionPlan& plan, bool enable_gqa);

}  // namespace tessera::kernels
