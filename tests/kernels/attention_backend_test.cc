// kernels/attention_backend.h on the CPU: restricting LibTorch's SDPA kernels changes the kernel
// it reports and runs, "auto" restores its choice, an unknown word is refused, and the grouped
// (enable_gqa) attention the model runs equals attention over expanded kv heads on every kernel.
#include "kernels/attention_backend.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

namespace {

using tessera::kernels::ChosenAttentionKernel;
using tessera::kernels::NativeGroupedAttention;
using tessera::kernels::RestrictAttentionKernels;

// Restores LibTorch's own choice however a test ends.
struct AutoKernelsAfter {
  ~AutoKernelsAfter() { RestrictAttentionKernels("auto"); }
};

torch::Tensor Expand(const torch::Tensor& kv, int64_t group) {
  return kv.repeat_interleave(group, /*dim=*/1);
}

}  // namespace

CATCH_TEST_CASE("attention kernels: restricting LibTorch's SDPA kernels is what it then picks") {
  AutoKernelsAfter restore;
  torch::manual_seed(3);
  const torch::Tensor q = torch::randn({2, 8, 64, 32}), kv = torch::randn({2, 2, 64, 32});
  CATCH_REQUIRE(RestrictAttentionKernels("auto"));
  // LibTorch's CPU flash kernel takes causal fp32 attention with grouped kv heads.
  CATCH_CHECK(ChosenAttentionKernel(q, kv, kv, /*enable_gqa=*/true) == "flash");
  CATCH_CHECK(NativeGroupedAttention(q, kv, kv));
  CATCH_REQUIRE(RestrictAttentionKernels("math"));
  CATCH_CHECK(ChosenAttentionKernel(q, kv, kv, true) == "math");
  // CUDA-only kernels: the CPU has none to run once they are the only ones allowed.
  CATCH_REQUIRE(RestrictAttentionKernels("cudnn"));
  CATCH_CHECK(ChosenAttentionKernel(q, kv, kv, true) == "none");
  CATCH_REQUIRE(RestrictAttentionKernels("flash"));
  CATCH_CHECK(ChosenAttentionKernel(q, kv, kv, true) == "flash");
  CATCH_CHECK_FALSE(RestrictAttentionKernels("fastest"));
  CATCH_REQUIRE(RestrictAttentionKernels("auto"));
  CATCH_CHECK(ChosenAttentionKernel(q, kv, kv, true) == "flash");
}

CATCH_TEST_CASE("attention kernels: grouped kv heads in place equal expanded ones, on flash and math") {
  AutoKernelsAfter restore;
  torch::manual_seed(4);
  const int64_t group = 4;
  const torch::Tensor q = torch::randn({2, 8, 48, 16}, torch::kDouble).to(torch::kFloat).requires_grad_();
  const torch::Tensor k = torch::randn({2, 2, 48, 16}).requires_grad_();
  const torch::Tensor v = torch::randn({2, 2, 48, 16}).requires_grad_();
  // The reference: math on expanded kv heads, in fp64.
  CATCH_REQUIRE(RestrictAttentionKernels("math"));
  const torch::Tensor q64 = q.detach().to(torch::kDouble).requires_grad_();
  const torch::Tensor k64 = k.detach().to(torch::kDouble).requires_grad_();
  const torch::Tensor v64 = v.detach().to(torch::kDouble).requires_grad_();
  const torch::Tensor ref =
      at::scaled_dot_product_attention(q64, Expand(k64, group), Expand(v64, group), {}, 0.0, true);
  const torch::Tensor seed = torch::randn_like(ref);
  ref.backward(seed);
  for (const char* kernel : {"flash", "math"}) {
    CATCH_INFO(kernel);
    CATCH_REQUIRE(RestrictAttentionKernels(kernel));
    for (const torch::Tensor& t : {q, k, v}) t.mutable_grad() = torch::Tensor();
    const torch::Tensor out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, std::nullopt,
                                                               /*enable_gqa=*/true);
    out.backward(seed.to(torch::kFloat));
    // fp32 attention against fp64: softmax and two products over 48 keys of 16 dims, a few
    // float roundings of values of order 1 (seen ~1e-6; 1e-4 leaves room, a wrong group
    // mapping is off by order 1).
    CATCH_CHECK(torch::allclose(out.to(torch::kDouble), ref, 1e-4, 1e-4));
    CATCH_CHECK(torch::allclose(q.grad().to(torch::kDouble), q64.grad(), 1e-4, 1e-4));
    CATCH_CHECK(torch::allclose(k.grad().to(torch::kDouble), k64.grad(), 1e-4, 1e-4));
    CATCH_CHECK(torch::allclose(v.grad().to(torch::kDouble), v64.grad(), 1e-4, 1e-4));
  }
}
