// Tests of parallel/context_parallel/context_attention as every rank of a real job sees it: one
// process (cp 1: the identity gather) and under mpirun with 2 and 4 ranks (cp = world, and cp 2 x
// dp 2 on 4 ranks). Each rank computes the whole sequence's causal attention from the same
// seeded q, k, v, and its context-parallel attention on its two chunks of them; outputs and the
// gradients of its own q, k and v must match the whole computation's at its tokens.
//
// Tolerance: float64, where the two differ only in the order of the softmax's sums (each chunk
// attends over a prefix of the keys with a mask rather than the whole row with the causal flag)
// and in the reduce-scatter's sum of key/value gradients over the ranks: a few ulps of 2^-52 on
// values of order 1, so 1e-12. Float32 too, on LibTorch's fused CPU kernel (the one training
// uses, vectorised per instruction set): the same reorderings at 2^-24 over sums of 24 terms,
// so 1e-5.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "parallel/context_parallel/context_attention.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

using tessera::parallel::ContextAttentionPlan;
using tessera::parallel::ContextChunks;
using tessera::parallel::ProcessGrid;
using tessera::parallel::testing::MakeGrid;

namespace {

constexpr double kTol64 = 1e-12, kTol32 = 1e-5;  // see the file comment

struct Shapes {
  int64_t batch = 2, heads = 4, kv_heads = 2, seq = 24, head_dim = 8;
};

// The whole rows' attention with grouped kv heads: causal, and within each document when
// `segments` ([batch, seq]) is defined.
torch::Tensor WholeAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& segments) {
  const int64_t group = q.size(1) / k.size(1), seq = q.size(2);
  const torch::Tensor ke = k.repeat_interleave(group, 1), ve = v.repeat_interleave(group, 1);
  torch::Tensor mask = torch::ones({seq, seq}, torch::kBool).tril().unsqueeze(0);
  if (segments.defined()) mask = mask.logical_and(segments.unsqueeze(2) == segments.unsqueeze(1));
  return at::scaled_dot_product_attention(q, ke, ve, mask.unsqueeze(1));
}

// Packed documents of lengths 5, 11, 8 in row 0 and 24 (one document) in row 1.
torch::Tensor Segments(const Shapes& s) {
  torch::Tensor seg = torch::zeros({s.batch, s.seq}, torch::kLong);
  seg[0].narrow(0, 5, 11).fill_(1);
  seg[0].narrow(0, 16, 8).fill_(2);
  return seg;
}

void CheckAgainstWhole(ProcessGrid& grid, bool documents, torch::ScalarType dtype = torch::kDouble) {
  const Shapes s;
  tessera::parallel::Communicator& cp = grid.cp();
  torch::manual_seed(7);
  const auto options = torch::TensorOptions().dtype(dtype);
  const double tol = dtype == torch::kDouble ? kTol64 : kTol32;
  const torch::Tensor q = torch::randn({s.batch, s.heads, s.seq, s.head_dim}, options);
  const torch::Tensor k = torch::randn({s.batch, s.kv_heads, s.seq, s.head_dim}, options);
  const torch::Tensor v = torch::randn({s.batch, s.kv_heads, s.seq, s.head_dim}, options);
  const torch::Tensor dy = torch::randn({s.batch, s.heads, s.seq, s.head_dim}, options);
  const torch::Tensor segments = documents ? Segments(s) : torch::Tensor();

  std::vector<torch::Tensor> whole = {q.clone().requires_grad_(), k.clone().requires_grad_(),
                                      v.clone().requires_grad_()};
  const torch::Tensor y = WholeAttention(whole[0], whole[1], whole[2], segments);
  (y * dy).sum().backward();

  auto chunks = ContextChunks::Create(s.seq, cp.size(), cp.rank());
  CATCH_REQUIRE(chunks.ok());
  const torch::Tensor mine = torch::tensor(chunks->Positions(), torch::kLong);
  std::vector<torch::Tensor> local;
  for (const torch::Tensor& t : {q, k, v}) local.push_back(t.index_select(2, mine).requires_grad_());
  const ContextAttentionPlan plan =
      tessera::parallel::PlanContextAttention(&cp, *chunks, segments, torch::Device(torch::kCPU), dtype);
  const torch::Tensor y_local =
      tessera::parallel::ContextParallelAttention(local[0], local[1], local[2], plan);
  (y_local * dy.index_select(2, mine)).sum().backward();

  CATCH_CHECK((y_local - y.index_select(2, mine)).abs().max().item<double>() < tol);
  const char* names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    const double diff = (local[i].grad() - whole[i].grad().index_select(2, mine)).abs().max().item<double>();
    CATCH_INFO("gradient of " << names[i] << " on cp rank " << cp.rank() << " of " << cp.size());
    CATCH_CHECK(diff < tol);
  }
}

std::unique_ptr<ProcessGrid> Grid(int cp) {
  auto grid = MakeGrid({1, 1, 0, cp}, "tp-cp-dp-pp");
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  return std::move(*grid);
}

}  // namespace

CATCH_TEST_CASE("context-parallel attention equals the whole sequence's, cp = world") {
  auto grid = Grid(tessera::parallel::testing::TestRuntime()->world_size());
  CheckAgainstWhole(*grid, /*documents=*/false);
}

CATCH_TEST_CASE("context-parallel attention keeps packed documents apart, cp = world") {
  auto grid = Grid(tessera::parallel::testing::TestRuntime()->world_size());
  CheckAgainstWhole(*grid, /*documents=*/true);
}

CATCH_TEST_CASE("context-parallel attention in float32 on the fused CPU kernel, cp = world") {
  auto grid = Grid(tessera::parallel::testing::TestRuntime()->world_size());
  CheckAgainstWhole(*grid, /*documents=*/false, torch::kFloat);
  CheckAgainstWhole(*grid, /*documents=*/true, torch::kFloat);
}

CATCH_TEST_CASE("context-parallel attention on cp 2 x dp 2 (4 ranks)") {
  if (tessera::parallel::testing::TestRuntime()->world_size() != 4) return;
  auto grid = Grid(2);
  CATCH_CHECK(grid->dp().size() == 2);
  CATCH_CHECK(grid->dp_cp().size() == 4);
  CheckAgainstWhole(*grid, /*documents=*/true);
}
