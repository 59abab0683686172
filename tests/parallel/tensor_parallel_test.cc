// Tests of parallel/tensor_parallel (mappings, layers, vocab_parallel, chunked_cross_entropy) as every rank
// of a real job sees them: run as one process (TP = 1, the identity paths) and under mpirun with 2 and 4
// ranks (TP = 2; TP = 4 and TP = 2 x DP = 2 with 4 ranks). Every split computation is compared with the
// unsplit one that each rank computes locally from the same seeded inputs.
//
// Tolerances: the mappings, linear layers and embedding run in float64 (the communicators carry
// it), where the split and unsplit computations differ only in summation order: a few ulps of
// 2^-52 on values of order 1-10, so 1e-12 relative to the largest value. The cross-entropy computes
// in float32 by design: 1e-5 relative allows the different order of max, sum-exp and logarithm
// over at most 37 terms (float32 rounding is 6e-8 per operation).
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "kernels/rms_norm.h"
#include "kernels/weight_grad.h"
#include "parallel/process_grid.h"
#include "parallel/tensor_parallel/chunked_cross_entropy.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/mappings.h"
#include "parallel/tensor_parallel/norm_column_linear.h"
#include "parallel/tensor_parallel/vocab_parallel.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

namespace tp = tessera::parallel;
using tessera::parallel::Communicator;
using tessera::parallel::ProcessGrid;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestRuntime;

namespace {

constexpr double kFloat64Tol = 1e-12;  // see the file comment
constexpr double kFloat32Tol = 1e-5;   // see the file comment

// A tensor-parallel group of `size` ranks (the rest of the world is data-parallel).
struct Group {
  std::unique_ptr<ProcessGrid> grid;
  Communicator* comm = nullptr;
  int size = 1;
  int rank = 0;
};

Group MakeGroup(int size) {
  Group g;
  auto grid = MakeGrid({size, 1, 0});
  if (!grid.ok()) CATCH_FAIL(std::string(grid.status().message()));
  g.grid = std::move(*grid);
  g.comm = &g.grid->tp();
  g.size = g.comm->size();
  g.rank = g.comm->rank();
  return g;
}

// The TP degrees this world can form: 1, 2 and 4 where they divide it.
std::vector<int> Degrees() {
  std::vector<int> degrees;
  for (int n : {1, 2, 4}) {
    if (TestRuntime()->world_size() % n == 0) degrees.push_back(n);
  }
  return degrees;
}

// The same values on every rank: a generator seeded by `seed` alone.
at::Tensor Randn(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(dtype));
}

at::Tensor Block(const at::Tensor& t, int64_t dim, int parts, int index) {
  const int64_t block = t.size(dim) / parts;
  return t.narrow(dim, index * block, block);
}

// |got - want| <= tol * max(1, max |want|), elementwise, with the worst difference reported.
void CheckClose(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  CATCH_INFO(what);
  CATCH_REQUIRE(got.defined());
  CATCH_CHECK(got.sizes() == want.sizes());
  if (got.sizes() != want.sizes()) return;
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double scale = std::max(1.0, w.numel() ? w.abs().max().item<double>() : 0.0);
  const double diff = g.numel() ? (g - w).abs().max().item<double>() : 0.0;
  CATCH_INFO("max |difference| " << diff << ", allowed " << tol * scale);
  CATCH_CHECK(diff <= tol * scale);
}

// A leaf copy that records its gradient.
at::Tensor Leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

}  // namespace

CATCH_TEST_CASE("copy and reduce: forward and backward equal the unsplit computation") {
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    CATCH_INFO("tp " << n);
    const at::Tensor x = Randn({3, 4, 5}, 1);
    // Copy: identity forward; rank r's downstream loss sum(y * w_r) contributes w_r, and the
    // backward all-reduce sums them.
    at::Tensor xl = Leaf(x);
    at::Tensor y = tp::CopyToTensorParallel(xl, g.comm);
    CheckClose(y, x, 0, "copy forward");
    (y * Randn({3, 4, 5}, 100 + g.rank)).sum().backward();
    at::Tensor expected = at::zeros_like(x);
    for (int r = 0; r < n; ++r) expected += Randn({3, 4, 5}, 100 + r);
    CheckClose(xl.grad(), expected, kFloat64Tol, "copy backward");

    // Reduce: the sum of every rank's input; the (replicated) gradient passes through.
    at::Tensor part = Leaf(Randn({3, 4, 5}, 200 + g.rank));
    at::Tensor sum = tp::ReduceFromTensorParallel(part, g.comm);
    at::Tensor want = at::zeros_like(x);
    for (int r = 0; r < n; ++r) want += Randn({3, 4, 5}, 200 + r);
    CheckClose(sum, want, kFloat64Tol, "reduce forward");
    (sum * x).sum().backward();
    CheckClose(part.grad(), x, 0, "reduce backward");
  }
}

CATCH_TEST_CASE("scatter and gather along the last dimension") {
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    CATCH_INFO("tp " << n);
    const at::Tensor x = Randn({3, 4, 8}, 2);
    // Scatter: this rank's block; the backward all-gather assembles every rank's block gradient.
    at::Tensor xl = Leaf(x);
    at::Tensor y = tp::ScatterToLastDim(xl, g.comm);
    CheckClose(y, Block(x, -1, n, g.rank), 0, "scatter forward");
    (y * Randn({3, 4, 8 / n}, 300 + g.rank)).sum().backward();
    std::vector<at::Tensor> blocks;
    for (int r = 0; r < n; ++r) blocks.push_back(Randn({3, 4, 8 / n}, 300 + r));
    CheckClose(xl.grad(), at::cat(blocks, -1), 0, "scatter backward");

    // Gather: every rank's block in rank order; a replicated downstream gradient is split back.
    at::Tensor mine = Leaf(Block(x, -1, n, g.rank));
    at::Tensor full = tp::GatherFromLastDim(mine, g.comm);
    CheckClose(full, x, 0, "gather forward");
    const at::Tensor w = Randn({3, 4, 8}, 4);
    (full * w).sum().backward();
    CheckClose(mine.grad(), Block(w, -1, n, g.rank), 0, "gather backward");
  }
}

CATCH_TEST_CASE("sequence-parallel scatter, gather and reduce-scatter") {
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    CATCH_INFO("tp " << n);
    // batch 3 exercises the permuting copy around the collectives.
    const std::vector<int64_t> shape = {3, 8, 5}, block_shape = {3, 8 / n, 5};
    const at::Tensor x = Randn(shape, 3);

    // Scatter: this rank's sequence block; backward all-gathers the block gradients.
    at::Tensor xl = Leaf(x);
    at::Tensor y = tp::ScatterToSequence(xl, g.comm);
    CheckClose(y, Block(x, 1, n, g.rank), 0, "scatter forward");
    (y * Randn(block_shape, 400 + g.rank)).sum().backward();
    std::vector<at::Tensor> blocks;
    for (int r = 0; r < n; ++r) blocks.push_back(Randn(block_shape, 400 + r));
    CheckClose(xl.grad(), at::cat(blocks, 1), 0, "scatter backward");

    // Gather: the whole sequence; downstream is split over the group (rank r's loss uses its own
    // weights), so the backward reduce-scatter gives block r of the summed gradient.
    at::Tensor mine = Leaf(Block(x, 1, n, g.rank));
    at::Tensor full = tp::GatherFromSequence(mine, g.comm);
    CheckClose(full, x, 0, "gather forward");
    (full * Randn(shape, 500 + g.rank)).sum().backward();
    at::Tensor summed = at::zeros(shape, at::kDouble);
    for (int r = 0; r < n; ++r) summed += Randn(shape, 500 + r);
    CheckClose(mine.grad(), Block(summed, 1, n, g.rank), kFloat64Tol, "gather backward");

    // Reduce-scatter: block r of the sum of every rank's partial; backward all-gathers.
    at::Tensor partial = Leaf(Randn(shape, 600 + g.rank));
    at::Tensor reduced = tp::ReduceScatterToSequence(partial, g.comm);
    at::Tensor total = at::zeros(shape, at::kDouble);
    for (int r = 0; r < n; ++r) total += Randn(shape, 600 + r);
    CheckClose(reduced, Block(total, 1, n, g.rank), kFloat64Tol, "reduce-scatter forward");
    (reduced * Randn(block_shape, 700 + g.rank)).sum().backward();
    std::vector<at::Tensor> upstream_blocks;
    for (int r = 0; r < n; ++r) upstream_blocks.push_back(Randn(block_shape, 700 + r));
    CheckClose(partial.grad(), at::cat(upstream_blocks, 1), 0, "reduce-scatter backward");
  }
}

CATCH_TEST_CASE("column-parallel then row-parallel linear equals the unsplit pair") {
  const int64_t batch = 2, seq = 8, in = 6, hidden = 12, out = 5;
  const at::Tensor x = Randn({batch, seq, in}, 10);
  const at::Tensor w1 = Randn({hidden, in}, 11), w2 = Randn({out, hidden}, 12);
  const at::Tensor upstream = Randn({batch, seq, out}, 13);
  // The unsplit reference: y = (x W1^T) W2^T, loss = sum(y * upstream).
  at::Tensor rx = Leaf(x), rw1 = Leaf(w1), rw2 = Leaf(w2);
  at::Tensor ref = at::linear(at::linear(rx, rw1), rw2);
  (ref * upstream).sum().backward();

  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    for (bool sp : {false, true}) {
      CATCH_INFO("tp " << n << ", sequence parallel " << sp);
      at::Tensor xl = Leaf(sp ? Block(x, 1, n, g.rank) : x);
      at::Tensor w1l = Leaf(Block(w1, 0, n, g.rank)), w2l = Leaf(Block(w2, 1, n, g.rank));
      at::Tensor h = tp::ColumnParallelLinear(xl, w1l, g.comm, sp);
      CATCH_CHECK(h.sizes() == at::IntArrayRef({batch, seq, hidden / n}));
      at::Tensor y = tp::RowParallelLinear(h, w2l, g.comm, sp);
      CheckClose(y, sp ? Block(ref, 1, n, g.rank) : ref, kFloat64Tol, "output");
      (y * (sp ? Block(upstream, 1, n, g.rank) : upstream)).sum().backward();
      CheckClose(xl.grad(), sp ? Block(rx.grad(), 1, n, g.rank) : rx.grad(), kFloat64Tol, "grad x");
      CheckClose(w1l.grad(), Block(rw1.grad(), 0, n, g.rank), kFloat64Tol, "grad W1 (column shard)");
      CheckClose(w2l.grad(), Block(rw2.grad(), 1, n, g.rank), kFloat64Tol, "grad W2 (row shard)");
    }
  }
}

namespace {

// This rank's padded block of a [vocab, dim] table: its rows, then zeros up to the block size.
at::Tensor VocabBlock(const at::Tensor& full, const tp::ShardSpec& spec) {
  at::Tensor block = at::zeros({spec.block_size(), full.size(1)}, full.options());
  if (spec.end() > spec.begin())
    block.narrow(0, 0, spec.end() - spec.begin())
        .copy_(full.narrow(0, spec.begin(), spec.end() - spec.begin()));
  return block;
}

}  // namespace

CATCH_TEST_CASE("vocab-parallel embedding equals the unsplit lookup, vocab not divisible by TP") {
  const int64_t vocab = 37, dim = 6, batch = 3, seq = 8;
  const at::Tensor table = Randn({vocab, dim}, 20);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(21);
  at::Tensor tokens = at::randint(vocab, {batch, seq}, generator, at::kLong);
  tokens[0][0] = 0;
  tokens[1][1] = vocab - 1;  // the last real row sits next to the padding
  const at::Tensor upstream = Randn({batch, seq, dim}, 22);
  at::Tensor ref_table = Leaf(table);
  at::Tensor ref = at::embedding(ref_table, tokens);
  (ref * upstream).sum().backward();

  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
    CATCH_CHECK(tp::PaddedVocabSize(vocab, n) == spec.block_size() * n);
    for (bool sp : {false, true}) {
      CATCH_INFO("tp " << n << ", sequence parallel " << sp);
      at::Tensor shard = Leaf(VocabBlock(table, spec));
      at::Tensor y = tp::VocabParallelEmbedding(tokens, shard, spec.begin(), g.comm, sp);
      CheckClose(y, sp ? Block(ref, 1, n, g.rank) : ref, kFloat64Tol, "embedding forward");
      (y * (sp ? Block(upstream, 1, n, g.rank) : upstream)).sum().backward();
      // The padding rows' gradient is zero.
      CheckClose(shard.grad(), VocabBlock(ref_table.grad(), spec), kFloat64Tol, "embedding grad");
    }
  }
}

CATCH_TEST_CASE(
    "vocab-parallel cross-entropy equals the unsplit loss and gradient, and padding never counts") {
  // 37 is divisible by neither 2 nor 4; with 5 and TP 4 the last rank holds only padding.
  for (int64_t vocab : {37, 5}) {
    const int64_t tokens = 24;
    const at::Tensor logits = Randn({tokens, vocab}, 30, at::kFloat) * 3;
    auto generator = at::make_generator<at::CPUGeneratorImpl>(31);
    const at::Tensor targets = at::randint(vocab, {tokens}, generator, at::kLong);
    // Per-token weights check the scaling by the incoming gradient.
    const at::Tensor weights = Randn({tokens}, 32, at::kFloat);
    at::Tensor ref_logits = Leaf(logits);
    at::Tensor ref = torch::nn::functional::cross_entropy(
        ref_logits, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    (ref * weights).sum().backward();

    for (int n : Degrees()) {
      Group g = MakeGroup(n);
      CATCH_INFO("vocab " << vocab << ", tp " << n);
      const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
      at::Tensor block = VocabBlock(logits.t(), spec).t().contiguous();  // [tokens, B]
      // Padding columns hold huge values: they must not change the loss.
      const int64_t real = spec.valid_size();
      if (real < spec.block_size()) block.narrow(1, real, spec.block_size() - real).fill_(1e4);
      at::Tensor shard = Leaf(block);
      at::Tensor loss = tp::VocabParallelCrossEntropy(shard, targets, spec.begin(), vocab, g.comm);
      CheckClose(loss, ref, kFloat32Tol, "per-token loss");
      (loss * weights).sum().backward();
      at::Tensor want = VocabBlock(ref_logits.grad().t(), spec).t();
      CheckClose(shard.grad(), want, kFloat32Tol, "grad of the logits shard (zero on padding)");
    }
  }
}

CATCH_TEST_CASE("vocab-parallel cross-entropy keeps the logits' dtype for the gradient") {
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    const int64_t vocab = 16;
    const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
    at::Tensor logits = Randn({4, vocab}, 40, at::kFloat);
    at::Tensor shard = Leaf(logits.narrow(1, spec.begin(), spec.block_size()).to(at::kBFloat16));
    auto generator = at::make_generator<at::CPUGeneratorImpl>(41);
    at::Tensor targets = at::randint(vocab, {4}, generator, at::kLong);
    at::Tensor loss = tp::VocabParallelCrossEntropy(shard, targets, spec.begin(), vocab, g.comm);
    CATCH_CHECK(loss.scalar_type() == at::kFloat);
    loss.mean().backward();
    CATCH_CHECK(shard.grad().scalar_type() == at::kBFloat16);
    // Against fp32 math on the bf16-rounded logits: only the final bf16 rounding of the
    // gradient (2^-9 relative, on values below 1) differs.
    at::Tensor ref_logits = Leaf(logits.to(at::kBFloat16).to(at::kFloat));
    torch::nn::functional::cross_entropy(ref_logits, targets).backward();
    CheckClose(loss.mean(), torch::nn::functional::cross_entropy(ref_logits.detach(), targets), kFloat32Tol,
               "bf16 loss");
    CheckClose(shard.grad(), ref_logits.grad().narrow(1, spec.begin(), spec.block_size()), 1.0 / 256,
               "bf16 gradient");
  }
}

CATCH_TEST_CASE(
    "the chunked head + cross-entropy equals the unchunked head and loss, vocab not divisible by TP") {
  // fp32 throughout: the chunked loss forms the same logits row by row and the same fp32 softmax
  // statistics, in another summation order (kFloat32Tol, see the file comment); its gradients
  // come from the recomputed logits and the saved log-sum-exp instead of a saved softmax.
  const int64_t tokens = 24, dim = 8;
  for (int64_t vocab : {37, 5}) {
    const at::Tensor hidden = Randn({tokens, dim}, 50, at::kFloat);
    const at::Tensor table = Randn({vocab, dim}, 51, at::kFloat);
    auto generator = at::make_generator<at::CPUGeneratorImpl>(52);
    const at::Tensor targets = at::randint(vocab, {tokens}, generator, at::kLong);
    at::Tensor ref_h = Leaf(hidden), ref_w = Leaf(table);
    const at::Tensor ref_loss = torch::nn::functional::cross_entropy(at::matmul(ref_h, ref_w.t()), targets);
    (ref_loss * 0.7).backward();  // an incoming gradient other than 1
    for (int n : Degrees()) {
      Group g = MakeGroup(n);
      const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
      for (int64_t chunk : {int64_t{1}, int64_t{5}, tokens, int64_t{100}}) {
        CATCH_INFO("vocab " << vocab << ", tp " << n << ", chunk " << chunk);
        at::Tensor h = Leaf(hidden), w = Leaf(VocabBlock(table, spec));
        const at::Tensor loss = tp::ChunkedLinearCrossEntropy(
            h, w, targets,
            {.chunk_tokens = chunk, .vocab_begin = spec.begin(), .vocab_size = vocab, .group = g.comm});
        CATCH_CHECK(loss.dim() == 0);
        CheckClose(loss, ref_loss, kFloat32Tol, "loss");
        (loss * 0.7).backward();
        // Each rank's input gradient is its columns' part: summed over the group, it is the whole.
        at::Tensor grad_h = h.grad().clone();
        if (g.size > 1) CATCH_REQUIRE(g.comm->AllReduce(grad_h, tp::ReduceOp::kSum).ok());
        CheckClose(grad_h, ref_h.grad(), kFloat32Tol, "grad of the hidden states");
        CheckClose(w.grad(), VocabBlock(ref_w.grad(), spec), kFloat32Tol,
                   "grad of the head shard (zero on padding)");
      }
    }
  }
}

CATCH_TEST_CASE("the z-loss adds z log(Z)^2 per token, with its gradient, chunked and vocab-parallel") {
  // Against autograd through the plain formula: cross-entropy + z * mean(logsumexp(logits)^2).
  // Large logits (x 4) so that log Z is far from 0 and the term is not lost in the tolerance.
  const int64_t tokens = 24, dim = 8, vocab = 37;
  const double z = 0.05;
  const at::Tensor hidden = Randn({tokens, dim}, 70, at::kFloat) * 2.0;
  const at::Tensor table = Randn({vocab, dim}, 71, at::kFloat) * 2.0;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(72);
  const at::Tensor targets = at::randint(vocab, {tokens}, generator, at::kLong);
  at::Tensor ref_h = Leaf(hidden), ref_w = Leaf(table);
  const at::Tensor logits = at::matmul(ref_h, ref_w.t());
  const at::Tensor ref_loss =
      torch::nn::functional::cross_entropy(logits, targets) + at::logsumexp(logits, -1).square().mean() * z;
  ref_loss.backward();
  // The term is not negligible here, so a function that dropped it would fail.
  const double plain = torch::nn::functional::cross_entropy(logits, targets).item<double>();
  CATCH_REQUIRE(ref_loss.item<double>() - plain > 0.1);
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
    for (int64_t chunk : {int64_t{5}, tokens}) {
      CATCH_INFO("tp " << n << ", chunk " << chunk);
      at::Tensor h = Leaf(hidden), w = Leaf(VocabBlock(table, spec));
      const at::Tensor loss = tp::ChunkedLinearCrossEntropy(h, w, targets,
                                                            {.chunk_tokens = chunk,
                                                             .vocab_begin = spec.begin(),
                                                             .vocab_size = vocab,
                                                             .group = g.comm,
                                                             .z_loss = z});
      CheckClose(loss, ref_loss, kFloat32Tol, "loss with z-loss");
      loss.backward();
      at::Tensor grad_h = h.grad().clone();
      if (g.size > 1) CATCH_REQUIRE(g.comm->AllReduce(grad_h, tp::ReduceOp::kSum).ok());
      CheckClose(grad_h, ref_h.grad(), kFloat32Tol, "grad of the hidden states with z-loss");
      CheckClose(w.grad(), VocabBlock(ref_w.grad(), spec), kFloat32Tol, "grad of the head shard with z-loss");
    }
  }
}

CATCH_TEST_CASE(
    "the chunked head + cross-entropy in bf16: a bf16 weight's gradient lands in its fp32 .grad") {
  const int64_t tokens = 16, dim = 8, vocab = 37;
  const at::Tensor hidden = Randn({tokens, dim}, 60, at::kFloat).to(at::kBFloat16);
  const at::Tensor table = Randn({vocab, dim}, 61, at::kFloat).to(at::kBFloat16);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(62);
  const at::Tensor targets = at::randint(vocab, {tokens}, generator, at::kLong);
  // The unchunked path as the model ran it: the bf16 product, the loss on its fp32 values.
  at::Tensor ref_h = Leaf(hidden), ref_w = Leaf(table);  // its gradient: fp32, in .grad
  const at::Tensor ref_logits = tessera::kernels::Linear(ref_h, {ref_w});
  const at::Tensor ref_loss = torch::nn::functional::cross_entropy(ref_logits.to(at::kFloat), targets);
  ref_loss.backward();
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    const tp::ShardSpec spec = tp::VocabShard(vocab, n, g.rank);
    at::Tensor h = Leaf(hidden), w = Leaf(VocabBlock(table, spec));
    const at::Tensor loss = tp::ChunkedLinearCrossEntropy(
        h, w, targets,
        {.chunk_tokens = 3, .vocab_begin = spec.begin(), .vocab_size = vocab, .group = g.comm});
    CheckClose(loss, ref_loss, kFloat32Tol, "bf16 loss");
    loss.backward();
    CATCH_CHECK(h.grad().scalar_type() == at::kBFloat16);
    CATCH_REQUIRE(w.grad().defined());
    CATCH_CHECK(w.grad().scalar_type() == at::kFloat);  // never rounded to bf16
    at::Tensor grad_h = h.grad().to(at::kFloat);
    if (g.size > 1) CATCH_REQUIRE(g.comm->AllReduce(grad_h, tp::ReduceOp::kSum).ok());
    // The input gradient is rounded to bf16 per rank before the sum (2^-8 relative, on values
    // below 1); the weight gradient is fp32 from the bf16-rounded softmax gradient, as the
    // unchunked path's.
    CheckClose(grad_h, ref_h.grad().to(at::kFloat), 1.0 / 128, "bf16 grad of the hidden states");
    CATCH_CHECK(ref_w.grad().scalar_type() == at::kFloat);
    CheckClose(w.grad(), VocabBlock(ref_w.grad(), spec), 1.0 / 256, "fp32 grad of the bf16 head shard");
  }
}

CATCH_TEST_CASE("the chunked head + cross-entropy refuses shapes that do not agree") {
  const at::Tensor h = at::zeros({4, 8}), w = at::zeros({5, 8}), t = at::zeros({4}, at::kLong);
  const auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  CATCH_CHECK(error_of([&] {
                tp::ChunkedLinearCrossEntropy(h, at::zeros({5, 7}), t, {.vocab_size = 5});
              }).find("hidden [..., dim] and weight [vocab, dim]") != std::string::npos);
  CATCH_CHECK(error_of([&] {
                tp::ChunkedLinearCrossEntropy(h, w, at::zeros({3}, at::kLong), {.vocab_size = 5});
              }).find("targets [3] must hold 4 ids") != std::string::npos);
  CATCH_CHECK(error_of([&] {
                tp::ChunkedLinearCrossEntropy(h, w, t, {.chunk_tokens = 0, .vocab_size = 5});
              }).find("chunk_tokens must be positive, got 0") != std::string::npos);
}

CATCH_TEST_CASE(
    "the norm folded into the column layer equals RmsNorm then the layer, bit for bit, split passes too") {
  // fp32 and bf16 (bf16 weights, fp32 .grad as the reducer gives them); two weights as q|k|v's.
  const int64_t batch = 2, seq = 8, in = 6;
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      for (bool sp : {false, true}) {
        for (bool split : {false, true}) {  // one backward, or an input pass then a weight pass (ZB-H1)
          CATCH_INFO("tp " << n << ", " << c10::toString(dtype) << ", sp " << sp << ", split " << split);
          const at::Tensor h_full = Randn({batch, seq, in}, 40, at::kFloat);
          const at::Tensor h_block = sp ? Block(h_full, 1, n, g.rank) : h_full;
          const at::Tensor upstream = Randn({batch, seq, 8 / n + 2}, 41 + g.rank, at::kFloat);
          std::vector<std::vector<at::Tensor>> leaves(2);  // [norm weight, w1, w2] of each side
          for (auto& side : leaves) {
            side.push_back(Leaf((Randn({in}, 42, at::kFloat) * 0.1 + 1.0).to(dtype)));
            side.push_back(Leaf(Block(Randn({8, in}, 43, at::kFloat), 0, n, g.rank).to(dtype)));
            side.push_back(Leaf(Block(Randn({2 * n, in}, 44, at::kFloat), 0, n, g.rank).to(dtype)));
            if (dtype == at::kBFloat16) {
              for (auto& p : side) p.mutable_grad() = at::zeros(p.sizes(), at::kFloat);
            }
          }
          std::vector<at::Tensor> inputs = {Leaf(h_block), Leaf(h_block)};
          at::Tensor a = tp::ColumnParallelLinear(
              tessera::kernels::RmsNorm(inputs[0], tessera::kernels::Fp32Weight(leaves[0][0]), 1e-5, dtype),
              {leaves[0][1], leaves[0][2]}, g.comm, sp);
          at::Tensor b = tp::NormColumnParallelLinear(inputs[1], leaves[1][0], 1e-5, dtype,
                                                      {leaves[1][1], leaves[1][2]}, g.comm, sp);
          CATCH_CHECK(at::equal(a, b));
          at::Tensor la = (a.to(at::kFloat) * upstream).sum();
          at::Tensor lb = (b.to(at::kFloat) * upstream).sum();
          if (split) {
            inputs[1].mutable_grad() = torch::autograd::grad({lb}, {inputs[1]}, {}, /*retain_graph=*/true)[0];
            torch::autograd::backward({lb}, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                      std::vector<at::Tensor>(leaves[1].begin(), leaves[1].end()));
          } else {
            lb.backward();
          }
          la.backward();
          CATCH_CHECK(at::equal(inputs[0].grad(), inputs[1].grad()));
          for (size_t i = 0; i < 3; ++i) {
            CATCH_INFO("parameter " << i);
            CATCH_CHECK(at::equal(leaves[0][i].grad(), leaves[1][i].grad()));
          }
        }
      }
    }
  }
}
