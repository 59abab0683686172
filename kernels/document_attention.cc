// Document-masked attention: the per-document loop and the boolean mask, see the header.
#include "kernels/document_attention.h"

#include <ATen/ops/_flash_attention_forward.h>
#include <torch/torch.h>

#include "kernels/attention_backend.h"

namespace tessera::kernels {
namespace {

torch::Tensor CausalSdpa(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         bool enable_gqa) {
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                          /*scale=*/std::nullopt, enable_gqa);
}

// One causal call per document of each row; rows of a single document go together in one call,
// exactly as attention without documents runs.
torch::Tensor PerDocumentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const std::vector<std::vector<int64_t>>& bounds, bool enable_gqa) {
  bool all_single = true;
  for (const auto& row : bounds) all_single = all_single && row.size() == 2;
  if (all_single) return CausalSdpa(q, k, v, enable_gqa);
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < static_cast<int64_t>(bounds.size()); ++b) {
    const torch::Tensor qb = q.narrow(0, b, 1), kb = k.narrow(0, b, 1), vb = v.narrow(0, b, 1);
    std::vector<torch::Tensor> documents;
    for (size_t d = 0; d + 1 < bounds[b].size(); ++d) {
      const int64_t start = bounds[b][d], length = bounds[b][d + 1] - start;
      documents.push_back(CausalSdpa(qb.narrow(2, start, length), kb.narrow(2, start, length),
                                     vb.narrow(2, start, length), enable_gqa));
    }
    rows.push_back(documents.size() == 1 ? documents[0] : torch::cat(documents, 2));
  }
  return torch::cat(rows, 0);
}

// Document start offsets of every row, then seq (the rows' boundaries), from host segments.
std::vector<std::vector<int64_t>> DocumentBounds(const torch::Tensor& segments) {
  const torch::Tensor s = segments.contiguous();
  const int64_t rows = s.size(0), seq = s.size(1);
  const int64_t* p = s.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> bounds;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> starts = {0};
    for (int64_t t = 1; t < seq; ++t) {
      TORCH_CHECK(p[r * seq + t] >= p[r * seq + t - 1], "document segments decrease in row ", r, " at ", t);
      if (p[r * seq + t] != p[r * seq + t - 1]) starts.push_back(t);
    }
    starts.push_back(seq);
    bounds.push_back(std::move(starts));
  }
  return bounds;
}

// The tokens of all rows as one sequence of documents: [batch x seq, heads, head_dim] views of
// q, k, v, and flash's varlen kernel causal within each document (a document never spans rows:
// each row's last offset is a boundary).
torch::Tensor VarlenFlashAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const DocumentAttentionPlan& plan) {
  const int64_t batch = q.size(0), heads = q.size(1), seq = q.size(2), head_dim = q.size(3);
  const auto packed = [&](const torch::Tensor& t) {
    return t.transpose(1, 2).reshape({batch * seq, t.size(1), head_dim});
  };
  const auto outputs = at::_flash_attention_forward(packed(q), packed(k), packed(v), plan.cu_seqlens,
                                                    plan.cu_seqlens, plan.max_document, plan.max_document,
                                                    /*dropout_p=*/0.0, /*is_causal=*/true,
                                                    /*return_debug_mask=*/false);
  return std::get<0>(outputs).view({batch, seq, heads, head_dim}).transpose(1, 2);
}

}  // namespace

bool UsesVarlenFlash(const DocumentAttentionPlan& plan, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v, bool enable_gqa) {
  // (On the CPU LibTorch's "flash" is another kernel, without a variable-length form.)
  return plan.cu_seqlens.defined() && q.is_cuda() && ChosenAttentionKernel(q, k, v, enable_gqa) == "flash";
}

torch::Tensor DocumentCausalMask(const torch::Tensor& segments) {
  const int64_t seq = segments.size(1);
  const torch::Tensor same = segments.unsqueeze(2) == segments.unsqueeze(1);  // [B, T(query), T(key)]
  const torch::Tensor causal = torch::ones({seq, seq}, segments.options().dtype(torch::kBool)).tril();
  return same.logical_and(causal).unsqueeze(1);
}

DocumentAttentionPlan PlanDocumentAttention(const torch::Tensor& segments, torch::Device device,
                                            DocumentAttentionPath path) {
  TORCH_CHECK(segments.dim() == 2 && segments.scalar_type() == torch::kLong && segments.device().is_cpu(),
              "document segments: int64 CPU [batch, seq], got ", segments.scalar_type(), " ",
              segments.sizes(), " on ", segments.device());
  DocumentAttentionPlan plan;
  plan.per_document = path == DocumentAttentionPath::kPerDocument ||
                      (path == DocumentAttentionPath::kAuto && device.is_cpu());
  if (path == DocumentAttentionPath::kMask) {
    plan.mask = DocumentCausalMask(segments.to(device));
    return plan;
  }
  std::vector<std::vector<int64_t>> bounds = DocumentBounds(segments);
  if (plan.per_document) {
    plan.bounds = std::move(bounds);
    return plan;
  }
  // Offsets into the flattened batch x seq tokens, counted on the host (the segments come from
  // the loader's rows there) and copied once per micro-batch.
  const int64_t seq = segments.size(1);
  std::vector<int32_t> offsets = {0};
  for (size_t r = 0; r < bounds.size(); ++r) {
    for (size_t d = 1; d < bounds[r].size(); ++d) {
      offsets.push_back(static_cast<int32_t>(static_cast<int64_t>(r) * seq + bounds[r][d]));
      plan.max_document = std::max(plan.max_document, bounds[r][d] - bounds[r][d - 1]);
    }
  }
  plan.cu_seqlens = torch::tensor(offsets, torch::kInt32).to(device);
  plan.segments = segments.to(device);
  return plan;
}

torch::Tensor DocumentAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const DocumentAttentionPlan& plan, bool enable_gqa) {
  if (plan.per_document) {
    TORCH_CHECK(static_cast<int64_t>(plan.bounds.size()) == q.size(0), "document plan of ",
                plan.bounds.size(), " rows for a batch of ", q.size(0));
    return PerDocumentAttention(q, k, v, plan.bounds, enable_gqa);
  }
  if (UsesVarlenFlash(plan, q, k, v, enable_gqa)) {
    TORCH_CHECK(plan.cu_seqlens.device() == q.device() && plan.segments.size(0) == q.size(0) &&
                    plan.segments.size(1) == q.size(2),
                "document offsets of ", plan.segments.sizes(), " tokens for q ", q.sizes());
    return VarlenFlashAttention(q, k, v, plan);
  }
  // The mask: the plan's, or built here from its segments where flash cannot take the inputs.
  const torch::Tensor mask =
      plan.mask.defined() || !plan.segments.defined() ? plan.mask : DocumentCausalMask(plan.segments);
  TORCH_CHECK(mask.defined() && mask.size(0) == q.size(0) && mask.size(2) == q.size(2), "document mask ",
              mask.defined() ? mask.sizes() : c10::IntArrayRef{}, " for q ", q.sizes());
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/false,
                                          /*scale=*/std::nullopt, enable_gqa);
}

}  // namespace tessera::kernels
