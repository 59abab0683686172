// LibTorch's SDPA dispatch, asked and restricted: see attention_backend.h.
#include "kernels/attention_backend.h"

#include <ATen/Context.h>
#include <ATen/SDPBackend.h>
#include <ATen/ops/_fused_sdp_choice.h>

#include "absl/strings/str_cat.h"

namespace tessera::kernels {

bool RestrictAttentionKernels(std::string_view backend) {
  const bool all = backend == "auto";
  if (!all && backend != "flash" && backend != "efficient" && backend != "cudnn" && backend != "math") {
    return false;
  }
  at::Context& context = at::globalContext();
  context.setSDPUseFlash(all || backend == "flash");
  context.setSDPUseMemEfficient(all || backend == "efficient");
  context.setSDPUseCuDNN(all || backend == "cudnn");
  context.setSDPUseMath(all || backend == "math");
  return true;
}

std::string ChosenAttentionKernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  bool enable_gqa) {
  int64_t choice = static_cast<int64_t>(at::SDPBackend::error);
  try {
    choice = at::_fused_sdp_choice(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                   /*scale=*/std::nullopt, enable_gqa);
  } catch (const c10::Error&) {
    // No enabled kernel takes these inputs (LibTorch raises rather than returning `error`).
  }
  switch (static_cast<at::SDPBackend>(choice)) {
    case at::SDPBackend::math:
      return "math";
    case at::SDPBackend::flash_attention:
      return "flash";
    case at::SDPBackend::efficient_attention:
      return "efficient";
    case at::SDPBackend::cudnn_attention:
      return "cudnn";
    case at::SDPBackend::overrideable:
      return "overrideable";
    default:
      return "none";
  }
}

bool NativeGroupedAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  if (q.device().is_cpu()) return true;
  const std::string kernel = ChosenAttentionKernel(q, k, v, /*enable_gqa=*/true);
  return kernel != "math" && kernel != "none";
}

std::string DescribeAttention(int64_t n_heads, int64_t n_kv_heads, int64_t seq_len, int64_t head_dim,
                              torch::Device device, torch::ScalarType dtype) {
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  // The layouts Model's attention passes (model.cc Core): rotated q and k contiguous as
  // [B, T, H, hd] and transposed, v a view of the fused q|k|v product. The choice reads shapes,
  // strides, dtype and device, never the values.
  const auto rotated = [&](int64_t heads) {
    return torch::empty({1, seq_len, heads, head_dim}, options).transpose(1, 2);
  };
  const torch::Tensor fused = torch::empty({1, seq_len, (n_heads + 2 * n_kv_heads) * head_dim}, options);
  const torch::Tensor q = rotated(n_heads), k = rotated(n_kv_heads);
  const torch::Tensor v = fused.narrow(-1, (n_heads + n_kv_heads) * head_dim, n_kv_heads * head_dim)
                              .view({1, seq_len, n_kv_heads, head_dim})
                              .transpose(1, 2);
  if (n_kv_heads == n_heads)
    return absl::StrCat(ChosenAttentionKernel(q, k, v, false), " (one kv head per query head)");
  if (NativeGroupedAttention(q, k, v)) {
    return absl::StrCat(ChosenAttentionKernel(q, k, v, true), ", kv heads read in place (enable_gqa, ",
                        n_heads / n_kv_heads, " query heads each)");
  }
  const torch::Tensor k_all = rotated(n_heads), v_all = rotated(n_heads);
  return absl::StrCat(ChosenAttentionKernel(q, k_all, v_all, false),
                      ", kv heads expanded to every query head (no fused kernel takes them grouped here)");
}

torch::Tensor ExpandKvHeads(const torch::Tensor& kv, int64_t heads) {
  const int64_t batch = kv.size(0), kv_heads = kv.size(1), seq = kv.size(2), head_dim = kv.size(3);
  return kv.unsqueeze(2)
      .expand({batch, kv_heads, heads / kv_heads, seq, head_dim})
      .reshape({batch, heads, seq, head_dim});
}

}  // namespace tessera::kernels
