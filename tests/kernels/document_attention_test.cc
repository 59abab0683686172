// Tests of kernels/document_attention: the per-document loop and the boolean mask against
// attention written from the definition in fp64, document by document, forward and backward.
#include "kernels/document_attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tests/catch_compat.h"

using tessera::kernels::DocumentAttentionPath;

namespace {

// Causal softmax attention of one document's q [H, n, hd], k and v [Hkv, n, hd], fp64.
torch::Tensor DefinitionAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t heads = q.size(0), n = q.size(1), group = heads / k.size(0);
  const torch::Tensor kx = k.repeat_interleave(group, 0), vx = v.repeat_interleave(group, 0);
  torch::Tensor scores = torch::matmul(q, kx.transpose(1, 2)) / std::sqrt(static_cast<double>(q.size(2)));
  scores =
      scores.masked_fill(torch::ones({n, n}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), vx);
}

// Each row's documents, attended to one by one, in fp64.
torch::Tensor Reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const std::vector<std::vector<int64_t>>& bounds) {
  std::vector<torch::Tensor> rows;
  for (size_t b = 0; b < bounds.size(); ++b) {
    std::vector<torch::Tensor> docs;
    for (size_t d = 0; d + 1 < bounds[b].size(); ++d) {
      const int64_t s = bounds[b][d], n = bounds[b][d + 1] - s;
      docs.push_back(DefinitionAttention(q[b].narrow(1, s, n).to(torch::kDouble),
                                         k[b].narrow(1, s, n).to(torch::kDouble),
                                         v[b].narrow(1, s, n).to(torch::kDouble)));
    }
    rows.push_back(torch::cat(docs, 1));
  }
  return torch::stack(rows);
}

}  // namespace

CATCH_TEST_CASE("document mask: same document and not in the future") {
  const torch::Tensor segments = torch::tensor({0, 0, 1, 1, 2}, torch::kInt64).view({1, 5});
  const torch::Tensor mask = tessera::kernels::DocumentCausalMask(segments);
  // Written out by hand: rows are queries, columns keys.
  const torch::Tensor expected = torch::tensor({1, 0, 0, 0, 0,  //
                                                1, 1, 0, 0, 0,  //
                                                0, 0, 1, 0, 0,  //
                                                0, 0, 1, 1, 0,  //
                                                0, 0, 0, 0, 1},
                                               torch::kBool)
                                     .view({1, 1, 5, 5});
  CATCH_CHECK(torch::equal(mask, expected));
}

CATCH_TEST_CASE("document attention: the loop and the mask equal attention within each document") {
  torch::manual_seed(9);
  // Row 0: documents of 5, 1, 7 and 3 tokens; row 1: a single document.
  const torch::Tensor segments = torch::cat(
      {torch::tensor({0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3}, torch::kInt64).view({1, 16}),
       torch::zeros({1, 16}, torch::kInt64)});
  const std::vector<std::vector<int64_t>> bounds = {{0, 5, 6, 13, 16}, {0, 16}};
  for (const int64_t kv : {4, 2}) {
    const bool gqa = kv != 4;
    const auto f32 = torch::dtype(torch::kFloat).requires_grad(true);
    const torch::Tensor q = torch::randn({2, 4, 16, 8}, f32), k = torch::randn({2, kv, 16, 8}, f32),
                        v = torch::randn({2, kv, 16, 8}, f32);
    const torch::Tensor grad = torch::randn({2, 4, 16, 8});
    const torch::Tensor y_ref = Reference(q, k, v, bounds);
    // fp32 gradients of the fp64 reference: computed in fp64, rounded once by the casts' backward.
    const auto ref_grads = torch::autograd::grad({y_ref}, {q, k, v}, {grad.to(torch::kDouble)});
    for (const auto path : {DocumentAttentionPath::kPerDocument, DocumentAttentionPath::kMask}) {
      const auto plan = tessera::kernels::PlanDocumentAttention(segments, torch::kCPU, path);
      CATCH_CHECK(plan.per_document == (path == DocumentAttentionPath::kPerDocument));
      if (plan.per_document) CATCH_CHECK(plan.bounds == bounds);
      const torch::Tensor y = tessera::kernels::DocumentAttention(q, k, v, plan, gqa);
      // fp32 softmax attention over at most 16 keys against fp64: ~1e-7 relative per operation,
      // a few dozen of them; 1e-5 is far below any error of the masking (O(0.1)).
      CATCH_CHECK(torch::allclose(y.to(torch::kDouble), y_ref, 1e-5, 1e-5));
      const auto grads = torch::autograd::grad({y}, {q, k, v}, {grad});
      for (int i = 0; i < 3; ++i) CATCH_CHECK(torch::allclose(grads[i], ref_grads[i], 1e-5, 1e-5));
    }
  }
  // kAuto on the CPU is the loop (measured faster there: docs/perf.md).
  CATCH_CHECK(tessera::kernels::PlanDocumentAttention(segments, torch::kCPU).per_document);
}
