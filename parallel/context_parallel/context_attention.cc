// Context-parallel attention (context_attention.h): all-gather of K/V, the chunks' masks, and
// one fused attention call per local chunk over the keys it may see.
#include "parallel/context_parallel/context_attention.h"

#include <torch/torch.h>

#include <limits>

#include "kernels/attention_backend.h"
#include "parallel/tensor_parallel/mappings.h"

namespace tessera::parallel {

ContextAttentionPlan PlanContextAttention(Communicator* group, const ContextChunks& chunks,
                                          const torch::Tensor& segments, torch::Device device,
                                          torch::ScalarType dtype) {
  ContextAttentionPlan plan{group, chunks, {}, {}};
  const std::vector<int64_t> index = chunks.GatheredIndexOfGlobal();
  plan.gathered_to_global = torch::tensor(index, torch::kLong).to(device);
  const int64_t c = chunks.chunk();
  TORCH_CHECK(!segments.defined() || (segments.dim() == 2 && segments.size(1) == chunks.seq()),
              "context-parallel attention: document segments must be [rows, ", chunks.seq(),
              "] for the whole sequence, got ", segments.sizes());
  for (int l = 0; l < 2; ++l) {
    const int64_t g = chunks.GlobalChunk(l);
    const int64_t keys = (g + 1) * c;
    // Query j of the chunk is token g c + j: it sees keys 0 .. g c + j.
    const torch::Tensor query = torch::arange(g * c, (g + 1) * c, torch::kLong).unsqueeze(1);
    torch::Tensor mask = torch::arange(keys, torch::kLong).unsqueeze(0) <= query;  // [c, keys]
    if (segments.defined()) {
      const torch::Tensor mine = segments.narrow(1, g * c, c).unsqueeze(2);   // [rows, c, 1]
      const torch::Tensor theirs = segments.narrow(1, 0, keys).unsqueeze(1);  // [rows, 1, keys]
      mask = mask.unsqueeze(0).logical_and(mine == theirs);
    } else {
      mask = mask.unsqueeze(0);
    }
    const torch::Tensor additive = torch::zeros(mask.sizes(), torch::TensorOptions().dtype(dtype));
    plan.masks[l] = additive.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity())
                        .unsqueeze(1)
                        .to(device);
  }
  return plan;
}

torch::Tensor ContextParallelAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const ContextAttentionPlan& plan) {
  const int64_t heads = q.size(1), head_dim = q.size(3);
  const int64_t kv_heads = k.size(1), local = plan.chunks.local(), c = plan.chunks.chunk();
  TORCH_CHECK(q.size(2) == local && k.size(2) == local && v.size(2) == local,
              "context-parallel attention: ", local, " local tokens expected, got q ", q.sizes(), ", k ",
              k.sizes());
  // One collective for K and V: [batch, local, kv_heads, 2 head_dim] gathered along the
  // sequence (rank-major), then put in global order.
  torch::Tensor kv = torch::cat({k.transpose(1, 2), v.transpose(1, 2)}, -1);
  kv = GatherFromSequence(kv, plan.group).index_select(1, plan.gathered_to_global).transpose(1, 2);
  torch::Tensor keys = kv.narrow(-1, 0, head_dim), values = kv.narrow(-1, head_dim, head_dim);
  // The CPU's fused kernel takes grouped kv heads with a mask; elsewhere the kernels that take a
  // mask may not, so the gathered heads are expanded there.
  const bool grouped = kv_heads != heads;
  const bool native_gqa = grouped && q.device().is_cpu();
  if (grouped && !native_gqa) {
    keys = kernels::ExpandKvHeads(keys, heads);
    values = kernels::ExpandKvHeads(values, heads);
  }
  std::array<torch::Tensor, 2> out;
  for (int l = 0; l < 2; ++l) {
    const int64_t visible = (plan.chunks.GlobalChunk(l) + 1) * c;
    out[l] = at::scaled_dot_product_attention(q.narrow(2, l * c, c), keys.narrow(2, 0, visible),
                                              values.narrow(2, 0, visible), plan.masks[l], /*dropout_p=*/0.0,
                                              /*is_causal=*/false, /*scale=*/std::nullopt, native_gqa);
  }
  return torch::cat({out[0], out[1]}, 2);
}

}  // namespace tessera::parallel
