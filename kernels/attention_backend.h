// Which scaled-dot-product-attention kernel LibTorch runs for the model's attention, whether it
// reads grouped kv heads itself (enable_gqa) or needs k and v expanded to every query head, and
// restricting LibTorch to one kernel (model.attention_backend).
#pragma once

#include <torch/types.h>

#include <string>
#include <string_view>

namespace tessera::kernels {

// LibTorch's SDPA kernels, by the words model.attention_backend uses: "auto" enables all of them
// (LibTorch tries cuDNN/flash/efficient, in its order, before the unfused math), any other
// enables only that one. Returns false for an unknown word. Process-wide (LibTorch's global
// context), so it is set once at start-up.
bool RestrictAttentionKernels(std::string_view backend);

// The kernel LibTorch picks for causal attention of q [B, H, T, hd] against k, v
// [B, Hkv, T, hd]: "flash", "efficient", "cudnn", "math", "overrideable", or "none" (no enabled
// kernel takes these inputs).
std::string ChosenAttentionKernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  bool enable_gqa);

// Whether attention runs with enable_gqa on q's device: always on the CPU (its flash kernel
// reads shared kv heads itself); elsewhere when a fused kernel takes these grouped inputs, so
// that k and v are expanded (a copy per layer) only where the alternative is the unfused math.
bool NativeGroupedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// k or v [batch, kv_heads, seq, head_dim] with each kv head serving heads / kv_heads consecutive
// query heads, copied out to [batch, heads, seq, head_dim]: for the kernels that do not read
// grouped heads themselves.
torch::Tensor ExpandKvHeads(const torch::Tensor& kv, int64_t heads);

// One line for the start-up log: the kernel attention of this shape runs on `device` in `dtype`
// and how kv heads are read, from a probe with empty tensors of the model's per-rank shape.
std::string DescribeAttention(int64_t n_heads, int64_t n_kv_heads, int64_t seq_len, int64_t head_dim,
                              torch::Device device, torch::ScalarType dtype);

}  // namespace tessera::kernels
