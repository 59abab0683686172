// Document-masked attention on CUDA through LibTorch's variable-length flash kernel
// (kernels/document_attention.h): bf16 q, k, v with grouped kv heads, rows of several documents
// of unequal lengths (one of a single token, one a whole row), against attention within each
// document evaluated in fp64 on the CPU by the per-document path; forward and the gradients of
// q, k and v. Also that the plan falls back to the mask where flash cannot run (fp32). Needs a
// CUDA device with a flash kernel (label gpu).
#include <torch/torch.h>

#include <vector>

#include "kernels/document_attention.h"
#include "tests/catch_compat.h"

namespace {

namespace tk = ::tessera::kernels;

// Segments [2, 96]: row 0 holds documents of 17, 1, 40 and 38 tokens, row 1 one of 96.
torch::Tensor Segments() {
  std::vector<torch::Tensor> parts;
  int64_t id = 0;
  for (int64_t n : {17, 1, 40, 38}) parts.push_back(torch::full({n}, id++, torch::kInt64));
  return torch::stack({torch::cat(parts), torch::full({96}, id, torch::kInt64)});
}

double RelativeMaxError(const torch::Tensor& actual, const torch::Tensor& expected) {
  const torch::Tensor a = actual.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor e = expected.detach().to(torch::kCPU, torch::kDouble);
  return (a - e).abs().max().item<double>() / e.abs().max().item<double>();
}

}  // namespace

CATCH_TEST_CASE("document attention on CUDA: the variable-length flash kernel against fp64 per document") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(3);
  const int64_t heads = 8, kv_heads = 2, head_dim = 64, seq = 96;
  const auto cuda_bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  // [batch, heads, seq, head_dim] as the model hands them (after the transpose).
  torch::Tensor q = torch::randn({2, seq, heads, head_dim}, cuda_bf16).transpose(1, 2).requires_grad_();
  torch::Tensor k = torch::randn({2, seq, kv_heads, head_dim}, cuda_bf16).transpose(1, 2).requires_grad_();
  torch::Tensor v = torch::randn({2, seq, kv_heads, head_dim}, cuda_bf16).transpose(1, 2).requires_grad_();
  const torch::Tensor segments = Segments();
  const tk::DocumentAttentionPlan plan = tk::PlanDocumentAttention(segments, torch::kCUDA);
  CATCH_REQUIRE(!plan.per_document);
  CATCH_REQUIRE(plan.max_document == 96);
  CATCH_REQUIRE(tk::UsesVarlenFlash(plan, q, k, v, /*enable_gqa=*/true));
  const torch::Tensor y = tk::DocumentAttention(q, k, v, plan, /*enable_gqa=*/true);
  const torch::Tensor grad = torch::randn_like(y);
  (y.to(torch::kFloat) * grad.to(torch::kFloat)).sum().backward();

  const auto cpu64 = [](const torch::Tensor& t) {
    return t.detach().to(torch::kCPU, torch::kDouble).requires_grad_();
  };
  torch::Tensor q64 = cpu64(q), k64 = cpu64(k), v64 = cpu64(v);
  const tk::DocumentAttentionPlan reference_plan =
      tk::PlanDocumentAttention(segments, torch::kCPU, tk::DocumentAttentionPath::kPerDocument);
  const torch::Tensor reference = tk::DocumentAttention(q64, k64, v64, reference_plan, /*enable_gqa=*/true);
  (reference * grad.to(torch::kCPU, torch::kDouble)).sum().backward();

  // bf16 inputs are exact in fp64; flash accumulates in fp32 and rounds the output (and the
  // gradients) to bf16 once: 2^-8 relative, so 1e-2 of the largest value leaves room for the
  // softmax's fp32 rounding and catches any token attending across a document (an O(1) change).
  CATCH_CHECK(RelativeMaxError(y, reference) < 1e-2);
  CATCH_CHECK(RelativeMaxError(q.grad(), q64.grad()) < 2e-2);
  CATCH_CHECK(RelativeMaxError(k.grad(), k64.grad()) < 2e-2);
  CATCH_CHECK(RelativeMaxError(v.grad(), v64.grad()) < 2e-2);
}

CATCH_TEST_CASE("document attention on CUDA in fp32 falls back to the mask, and agrees") {
  CATCH_REQUIRE(torch::cuda::is_available());
  torch::manual_seed(4);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const torch::Tensor q = torch::randn({2, 4, 96, 32}, cuda), k = torch::randn({2, 4, 96, 32}, cuda);
  const torch::Tensor v = torch::randn({2, 4, 96, 32}, cuda);
  const torch::Tensor segments = Segments();
  const tk::DocumentAttentionPlan plan = tk::PlanDocumentAttention(segments, torch::kCUDA);
  CATCH_CHECK(!tk::UsesVarlenFlash(plan, q, k, v, /*enable_gqa=*/false));
  const torch::Tensor y = tk::DocumentAttention(q, k, v, plan, /*enable_gqa=*/false);
  const tk::DocumentAttentionPlan reference_plan =
      tk::PlanDocumentAttention(segments, torch::kCPU, tk::DocumentAttentionPath::kPerDocument);
  const torch::Tensor reference =
      tk::DocumentAttention(q.cpu().to(torch::kDouble), k.cpu().to(torch::kDouble),
                            v.cpu().to(torch::kDouble), reference_plan, false);
  // fp32 throughout (TF32 stays off in this process, LibTorch's default): 1e-4 relative.
  CATCH_CHECK(RelativeMaxError(y, reference) < 1e-4);
}
