// Tests of the tensor-parallel Llama model (trainer/model) as every rank of a real job sees it:
// under mpirun with 2 ranks (TP 2) and 4 ranks (TP 4, and TP 2 x DP 2), and as one process
// (pipeline chunks and option validation at TP 1). The reference is the TP = 1 model built in
// the same process without a communicator, from the same seed and batch: the sharded model's
// loss, its weights and gradients gathered from every rank's shard (through the ShardSpecs of
// ParameterInfos) must equal the reference's, for TP 2 and 4, with and without sequence
// parallelism, with kv heads split (8 heads / 4 kv) and replicated (8 heads / 2 kv at TP 4), a
// vocabulary divisible by neither 2 nor 4, tied and untied embeddings, the head + loss whole and
// in chunks (model.loss_chunk_tokens), the blocks saved or recomputed (model.recompute).
//
// Tolerances. fp32: the sharded model does the same arithmetic except that each row-parallel
// product sums its input features in tp partial GEMMs, then over the group, and the
// vocab-parallel loss orders its max/sum differently: rounding of order 2^-24 relative per
// operation, amplified through two layers, softmax and backward (measured at TP 2 and 4: loss
// 1e-7 relative, logits 3e-7 and gradients 6e-7 of each tensor's largest |value|). 1e-5 leaves a
// 15x margin and still fails on any real mistake (a missing gradient sum or a wrong kv head is
// off by O(1)). Weights must be bit-identical: the initialisation draws the same logical tensor
// and slices it. bf16: each rank's partial product is rounded to bf16 (8 significant bits:
// up to 2^-8 relative) before the partials are summed, where TP 1 rounds once after the whole sum;
// per element that is a few bf16 ulps, which the backward carries into the gradients (measured:
// logits 6e-3, gradients 1e-2 of the largest |value|; tolerance 5e-2), while the loss, a mean over
// 32 tokens, moves far less (measured 2e-5 relative; tolerance 1e-3, a quarter of one bf16 rounding).
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/parallel/comm/comm_test_util.h"

using tessera::ModelConfig;
using tessera::ModelShardOptions;
using tessera::ParameterInfo;
using tessera::Transformer;
using tessera::parallel::Communicator;
using tessera::parallel::ProcessGrid;
using tessera::parallel::testing::MakeGrid;
using tessera::parallel::testing::TestRuntime;

namespace {

constexpr double kFp32Tol = 1e-5;      // see the file comment
constexpr double kBf16LossTol = 1e-3;  // see the file comment
constexpr double kBf16GradTol = 5e-2;  // see the file comment
constexpr int64_t kSeq = 16, kBatch = 2;
constexpr uint64_t kSeed = 1234;

ModelConfig Shape(int64_t heads, int64_t kv, int64_t vocab, bool tie) {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.ffn_dim = 128;
  c.vocab_size = vocab;
  c.tie_embeddings = tie;
  return c;
}

std::string Describe(const ModelConfig& c) {
  return std::to_string(c.n_heads) + " heads / " + std::to_string(c.n_kv_heads) + " kv, vocab " +
         std::to_string(c.vocab_size) + (c.tie_embeddings ? ", tied" : ", untied");
}

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

// The TP degrees above 1 this world can form.
std::vector<int> Degrees() {
  std::vector<int> degrees;
  for (int n : {2, 4}) {
    if (TestRuntime()->world_size() % n == 0) degrees.push_back(n);
  }
  return degrees;
}

// A batch, the same on every rank.
std::pair<at::Tensor, at::Tensor> Batch(int64_t vocab, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor tokens = at::randint(vocab, {kBatch, kSeq}, generator, at::kLong);
  at::Tensor targets = at::randint(vocab, {kBatch, kSeq}, generator, at::kLong);
  return {tokens, targets};
}

// max |got - want| <= tol * max(|want|), the worst difference reported.
void CheckClose(const at::Tensor& got, const at::Tensor& want, double tol, const std::string& what) {
  CATCH_INFO(what);
  CATCH_CHECK(got.sizes() == want.sizes());
  if (got.sizes() != want.sizes()) return;
  const double scale = want.abs().max().item<double>();
  const double diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  CATCH_INFO("max |difference| " << diff << ", max |reference| " << scale << ", allowed " << tol * scale);
  CATCH_CHECK(diff <= tol * scale);
}

// The logical tensor assembled from every rank's block of `local` (a parameter or its
// gradient) as ParameterInfo's ShardSpec describes it. Collective over `group`: every rank calls
// it for the same parameters in the same order. Replicas of a block (kv heads shared by several
// ranks, replicated norms) must agree exactly; padding rows must be zero.
at::Tensor GatherLogical(const ParameterInfo& info, const at::Tensor& local, Communicator& group) {
  CATCH_INFO(info.name);
  const int n = group.size();
  const tessera::parallel::ShardSpec& s = info.shard;
  const int dim = s.dim < 0 ? 0 : s.dim;
  at::Tensor block = local.detach().cpu().movedim(dim, 0).contiguous();
  std::vector<int64_t> gathered_shape = block.sizes().vec();
  gathered_shape[0] *= n;
  at::Tensor all = at::empty(gathered_shape, block.options());
  if (!group.AllGather(all, block).ok()) CATCH_FAIL("all-gather of " << info.name);
  at::Tensor index = at::full({1}, static_cast<int64_t>(s.dim < 0 ? 0 : s.index), at::kLong);
  at::Tensor indices = at::empty({n}, at::kLong);
  if (!group.AllGather(indices, index).ok()) CATCH_FAIL("all-gather of the block indices of " << info.name);
  const int parts = s.dim < 0 ? 1 : s.parts;
  const int64_t rows = block.size(0);
  std::vector<int64_t> full_shape = block.sizes().vec();
  full_shape[0] = rows * parts;
  at::Tensor full = at::zeros(full_shape, block.options());
  std::vector<bool> placed(parts, false);
  for (int r = 0; r < n; ++r) {
    const int64_t i = indices[r].item<int64_t>();
    at::Tensor piece = all.narrow(0, r * rows, rows);
    if (placed[i]) {
      CATCH_CHECK(at::equal(full.narrow(0, i * rows, rows), piece));  // replicas agree
    } else {
      full.narrow(0, i * rows, rows).copy_(piece);
      placed[i] = true;
    }
  }
  const int64_t logical = s.dim < 0 ? rows : s.global_size;
  if (full.size(0) > logical) {
    CATCH_CHECK(full.narrow(0, logical, full.size(0) - logical).abs().max().item<double>() ==
                0.0);  // padding
  }
  return full.narrow(0, 0, logical).movedim(0, dim).contiguous();
}

struct Reference {
  double loss = 0;
  at::Tensor logits;
  std::map<std::string, at::Tensor> weights, grads;
};

Reference RunReference(ModelConfig config, torch::ScalarType dtype, const at::Tensor& tokens,
                       const at::Tensor& targets) {
  config.loss_chunk_tokens = 0;  // the whole logits at once
  Transformer model(config, kSeq);
  model->InitializeWeights(kSeed);
  model->SetComputeDtype(dtype);
  Reference ref;
  {
    torch::NoGradGuard no_grad;
    ref.logits = model->forward(tokens);
  }
  torch::Tensor loss = model->Loss(tokens, targets);
  loss.backward();
  ref.loss = loss.item<double>();
  for (const auto& item : model->named_parameters()) {
    ref.weights[item.key()] = item.value().detach().clone();
    ref.grads[item.key()] = item.value().grad().clone();
  }
  return ref;
}

// Builds the TP model, runs forward, loss and backward on the batch and compares everything with
// the reference.
// `loss_chunk`: the sharded model's model.loss_chunk_tokens (the reference's loss is unchunked);
// `recompute`: its blocks recomputed in backward (the reference saves everything).
void CompareWithReference(const ModelConfig& reference_config, Group& g, bool sp, torch::ScalarType dtype,
                          const Reference& ref, const at::Tensor& tokens, const at::Tensor& targets,
                          int64_t loss_chunk = 0, bool recompute = false) {
  ModelConfig config = reference_config;
  config.loss_chunk_tokens = loss_chunk;
  config.recompute = recompute ? tessera::RecomputeMode::kFull : tessera::RecomputeMode::kNone;
  CATCH_INFO(Describe(config) << ", tp " << g.size << ", sequence parallel " << sp << ", "
                              << c10::toString(dtype) << ", loss chunk " << loss_chunk << ", recompute "
                              << recompute);
  ModelShardOptions options;
  options.tp = g.comm;
  options.sequence_parallel = sp;
  Transformer model(config, kSeq, options);
  model->InitializeWeights(kSeed);
  model->SetComputeDtype(dtype);
  const bool bf16 = dtype == torch::kBFloat16;
  {
    torch::NoGradGuard no_grad;
    CheckClose(model->forward(tokens), ref.logits, bf16 ? kBf16GradTol : kFp32Tol, "gathered logits");
  }
  torch::Tensor loss = model->Loss(tokens, targets);
  loss.backward();
  CATCH_CHECK(loss.item<double>() == Approx(ref.loss).epsilon(bf16 ? kBf16LossTol : kFp32Tol));
  const absl::Status synced = model->SyncTensorParallelGrads();
  CATCH_REQUIRE(synced.ok());

  const std::vector<ParameterInfo> infos = model->ParameterInfos();
  CATCH_CHECK(infos.size() == ref.weights.size());
  for (const ParameterInfo& info : infos) {
    CATCH_INFO(info.name);
    CATCH_REQUIRE(ref.weights.count(info.name) == 1);
    CATCH_CHECK(info.global_shape == ref.weights.at(info.name).sizes().vec());
    CATCH_CHECK(info.tensor.sizes().vec() == tessera::LocalShape({info.shard, info.global_shape}));
    // Initialisation does not depend on the layout: bit-identical weights.
    CATCH_CHECK(at::equal(GatherLogical(info, info.tensor, *g.comm), ref.weights.at(info.name)));
    CheckClose(GatherLogical(info, info.tensor.grad(), *g.comm), ref.grads.at(info.name),
               bf16 ? kBf16GradTol : kFp32Tol, "gradient");
  }
}

}  // namespace

CATCH_TEST_CASE("TP model: loss, logits, weights and gradients equal the TP=1 model (fp32)") {
  // 8 heads / 4 kv: kv heads split at TP 2 and 4. 8 heads / 2 kv: split at TP 2, each kv head
  // replicated on two ranks at TP 4. Vocabularies 99 and 101: divisible by neither 2 nor 4. The
  // third has heads 12 wide on a 64-wide stream (q is 96 wide) and Llama 3.1's rotary scaling.
  ModelConfig wide_heads = Shape(8, 4, 99, false);
  wide_heads.explicit_head_dim = 12;
  wide_heads.rope_scaling = tessera::RopeScaling::kLlama3;
  wide_heads.rope_factor = 8;
  wide_heads.rope_low_freq_factor = 1;
  wide_heads.rope_high_freq_factor = 4;
  wide_heads.rope_original_max_position_embeddings = 8;
  for (const ModelConfig& config : {Shape(8, 4, 99, true), Shape(8, 2, 101, false), wide_heads}) {
    const auto [tokens, targets] = Batch(config.vocab_size, 7);
    const Reference ref = RunReference(config, torch::kFloat, tokens, targets);
    for (int n : Degrees()) {
      Group g = MakeGroup(n);
      for (bool sp : {false, true}) {
        // The chunked head + loss in chunks of 5 tokens (a ragged last chunk) against the
        // unchunked reference: the same tolerances hold.
        for (int64_t chunk : {int64_t{0}, int64_t{5}}) {
          CompareWithReference(config, g, sp, torch::kFloat, ref, tokens, targets, chunk);
        }
        // Recomputed blocks replay their collectives in backward.
        CompareWithReference(config, g, sp, torch::kFloat, ref, tokens, targets, 5, /*recompute=*/true);
      }
    }
  }
}

CATCH_TEST_CASE("TP model: bf16 compute stays within bf16 rounding of the TP=1 model") {
  const ModelConfig config = Shape(8, 2, 101, true);
  const auto [tokens, targets] = Batch(config.vocab_size, 8);
  const Reference ref = RunReference(config, torch::kBFloat16, tokens, targets);
  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    for (int64_t chunk : {int64_t{0}, int64_t{5}}) {
      CompareWithReference(config, g, /*sp=*/true, torch::kBFloat16, ref, tokens, targets, chunk);
    }
  }
}

namespace {

// Pipeline chunks of the same layout composed in one process: chunk 0 = embedding + layer 0,
// chunk 1 = layer 1 + head. Loss and gradients must equal the whole model's at the same TP degree:
// the same operations in the same order (the tied embedding's two gradient halves are summed
// by one addition either way), so exactly.
void CheckChunks(const ModelConfig& config, Communicator* tp, bool sp) {
  CATCH_INFO(Describe(config) << ", tp " << (tp ? tp->size() : 1) << ", sequence parallel " << sp);
  const auto [tokens, targets] = Batch(config.vocab_size, 9);
  ModelShardOptions whole_options;
  whole_options.tp = tp;
  whole_options.sequence_parallel = sp;
  Transformer whole(config, kSeq, whole_options);
  whole->InitializeWeights(kSeed);
  torch::Tensor whole_loss = whole->Loss(tokens, targets);
  whole_loss.backward();
  CATCH_REQUIRE(whole->SyncTensorParallelGrads().ok());

  ModelShardOptions first = whole_options, last = whole_options;
  first.num_layers = 1;
  first.has_head = false;
  last.first_layer = 1;
  last.has_embedding = false;
  Transformer chunk0(config, kSeq, first), chunk1(config, kSeq, last);
  chunk0->InitializeWeights(kSeed);
  chunk1->InitializeWeights(kSeed);
  CATCH_CHECK(chunk0->first_layer() == 0);
  CATCH_CHECK(chunk0->num_layers() == 1);
  CATCH_CHECK(chunk1->first_layer() == 1);
  CATCH_CHECK(chunk1->num_layers() == 1);

  torch::Tensor sent = chunk0->StageForward(tokens);
  const int tp_size = tp ? tp->size() : 1;
  CATCH_CHECK(sent.sizes() == at::IntArrayRef({kBatch, sp ? kSeq / tp_size : kSeq, config.dim}));
  torch::Tensor received = sent.detach().requires_grad_(true);
  torch::Tensor loss = chunk1->StageLoss(received, targets);
  loss.backward();
  sent.backward(received.grad());
  CATCH_CHECK(loss.item<double>() == whole_loss.item<double>());
  CATCH_REQUIRE(chunk0->SyncTensorParallelGrads().ok());
  CATCH_REQUIRE(chunk1->SyncTensorParallelGrads().ok());

  auto whole_params = whole->named_parameters();
  std::map<std::string, at::Tensor> chunk_grads;
  for (const ParameterInfo& info : chunk0->ParameterInfos()) {
    CATCH_CHECK_FALSE(info.is_tied_copy());
    CATCH_CHECK((info.name == "tok_embeddings" || info.name.starts_with("layers.0.")));
    chunk_grads[info.name] = info.tensor.grad();
  }
  for (const ParameterInfo& info : chunk1->ParameterInfos()) {
    CATCH_INFO(info.name);
    CATCH_CHECK((info.name == "norm" || info.name == "output" || info.name.starts_with("layers.1.")));
    if (info.name == "output" && config.tie_embeddings) {
      // The head's copy of the tied embedding: the same weights, its gradient summed with the
      // embedding's by the trainer.
      CATCH_CHECK(info.tied_copy_of == "tok_embeddings");
      CATCH_CHECK(at::equal(info.tensor, chunk0->tok_embeddings));
      chunk_grads["tok_embeddings"] = chunk_grads["tok_embeddings"] + info.tensor.grad();
      continue;
    }
    CATCH_CHECK_FALSE(info.is_tied_copy());
    CATCH_CHECK(at::equal(info.tensor, whole_params[info.name]));
    chunk_grads[info.name] = info.tensor.grad();
  }
  CATCH_CHECK(chunk_grads.size() == whole_params.size());
  for (const auto& item : whole_params) {
    CATCH_INFO(item.key());
    CATCH_REQUIRE(chunk_grads.count(item.key()) == 1);
    CATCH_CHECK(at::equal(chunk_grads[item.key()], item.value().grad()));
  }
}

}  // namespace

CATCH_TEST_CASE("pipeline chunks keep global layer names and compose to the whole model") {
  for (bool tie : {true, false}) {
    const ModelConfig config = Shape(8, 2, 99, tie);
    CheckChunks(config, nullptr, false);
    for (int n : Degrees()) {
      Group g = MakeGroup(n);
      CheckChunks(config, g.comm, /*sp=*/true);
    }
  }
}

CATCH_TEST_CASE("TP=2 training follows the TP=1 training step by step") {
  if (TestRuntime()->world_size() % 2 != 0) return;
  Group g = MakeGroup(2);
  const ModelConfig config = Shape(8, 4, 99, true);
  ModelShardOptions options;
  options.tp = g.comm;
  options.sequence_parallel = true;
  Transformer ref(config, kSeq), sharded(config, kSeq, options);
  ref->InitializeWeights(kSeed);
  sharded->InitializeWeights(kSeed);
  // Plain SGD: the update is linear in the gradient, so the two runs stay within fp32 rounding of
  // each other (AdamW's normalisation would magnify differences in near-zero gradients). At
  // rate 0.1 the loss falls steadily (4.6 -> 3.4); at 0.5 it oscillates and the two runs, like
  // any two chaotic trajectories, drift apart by 1e-4 within 20 steps.
  torch::optim::SGD ref_opt(ref->parameters(), torch::optim::SGDOptions(0.1));
  torch::optim::SGD sharded_opt(sharded->parameters(), torch::optim::SGDOptions(0.1));
  std::vector<double> ref_losses, sharded_losses;
  for (int step = 0; step < 20; ++step) {
    const auto [tokens, targets] = Batch(config.vocab_size, 100 + step % 4);  // 4 batches, revisited
    ref_opt.zero_grad();
    torch::Tensor a = ref->Loss(tokens, targets);
    a.backward();
    ref_opt.step();
    sharded_opt.zero_grad();
    torch::Tensor b = sharded->Loss(tokens, targets);
    b.backward();
    CATCH_REQUIRE(sharded->SyncTensorParallelGrads().ok());
    sharded_opt.step();
    ref_losses.push_back(a.item<double>());
    sharded_losses.push_back(b.item<double>());
  }
  for (int step = 0; step < 20; ++step) {
    CATCH_INFO("step " << step << ": TP 1 loss " << ref_losses[step] << ", TP 2 loss "
                       << sharded_losses[step]);
    // fp32 rounding differences carried through 20 updates: measured below 2e-7 relative;
    // 1e-5 leaves a 50x margin.
    CATCH_CHECK(sharded_losses[step] == Approx(ref_losses[step]).epsilon(1e-5));
  }
  // The run learns (otherwise equal losses would prove little): the last pass over the four
  // batches is clearly below the first.
  CATCH_CHECK(ref_losses[19] + ref_losses[18] + ref_losses[17] + ref_losses[16] <
              0.95 * (ref_losses[0] + ref_losses[1] + ref_losses[2] + ref_losses[3]));
}

CATCH_TEST_CASE("layouts that do not fit are errors naming the numbers") {
  using tessera::ValidateShardOptions;
  ModelShardOptions chunk;
  chunk.first_layer = 3;
  absl::Status status = ValidateShardOptions(Shape(8, 4, 99, true), kSeq, chunk);
  CATCH_CHECK(absl::IsInvalidArgument(status));
  CATCH_CHECK(std::string(status.message()).find("first_layer = 3") != std::string::npos);
  chunk.first_layer = 1;
  chunk.num_layers = 2;
  CATCH_CHECK_FALSE(ValidateShardOptions(Shape(8, 4, 99, true), kSeq, chunk).ok());
  CATCH_CHECK_THROWS(Transformer(Shape(8, 4, 99, true), kSeq, chunk));

  for (int n : Degrees()) {
    Group g = MakeGroup(n);
    CATCH_INFO("tp " << n);
    ModelShardOptions options;
    options.tp = g.comm;
    // 6 query heads do not split over 4 ranks; 3 kv heads neither split over 2 or 4 ranks nor
    // divide them.
    if (n == 4) {
      status = ValidateShardOptions(Shape(6, 6, 99, true), kSeq, options);
      CATCH_CHECK(std::string(status.message()).find("n_heads = 6 is not a multiple of tp = 4") !=
                  std::string::npos);
    }
    ModelConfig odd_kv = Shape(12, 3, 99, true);
    odd_kv.dim = 48;
    status = ValidateShardOptions(odd_kv, kSeq, options);
    CATCH_CHECK(std::string(status.message()).find("n_kv_heads = 3") != std::string::npos);
    CATCH_CHECK_THROWS(Transformer(odd_kv, kSeq, options));

    options.sequence_parallel = true;
    status = ValidateShardOptions(Shape(8, 4, 99, true), kSeq + 1, options);
    CATCH_CHECK(std::string(status.message()).find("seq_len = 17") != std::string::npos);
    CATCH_CHECK(std::string(status.message()).find("is not a multiple of tp = " + std::to_string(n)) !=
                std::string::npos);
    // A batch whose length does not split: an error before any collective, on every rank.
    Transformer model(Shape(8, 4, 99, true), kSeq, options);
    model->InitializeWeights(kSeed);
    const auto [tokens, targets] = Batch(99, 3);
    CATCH_CHECK_THROWS(model->Loss(tokens.narrow(1, 0, kSeq - 1), targets.narrow(1, 0, kSeq - 1)));
  }
}
