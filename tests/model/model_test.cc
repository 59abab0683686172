// Tests of trainer/model: parameter count against the closed formula, causality, gradients
// against finite differences, and grouped-query attention against plain multi-head attention.
#include "model/model.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/sharding.h"
#include "tests/catch_compat.h"

using tessera::ModelConfig;
using tessera::Transformer;

namespace {

ModelConfig Shape(int64_t dim, int64_t layers, int64_t heads, int64_t kv, int64_t ffn, int64_t vocab,
                  bool tie) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.ffn_dim = ffn;
  c.vocab_size = vocab;
  c.tie_embeddings = tie;
  return c;
}

int64_t CountParameters(Transformer& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

}  // namespace

CATCH_TEST_CASE("parameter count equals the closed formula") {
  for (const ModelConfig& c : {Shape(64, 2, 4, 4, 160, 100, true), Shape(64, 3, 8, 2, 96, 257, false),
                               Shape(96, 1, 6, 3, 256, 512, true), Shape(32, 4, 2, 1, 64, 50, false)}) {
    Transformer model(c, 8);
    const int64_t d = c.dim, hd = c.dim / c.n_heads;
    // Per block: q and o are d x (heads*hd) = d x d, k and v are d x (kv*hd), three MLP
    // matrices d x ffn, two norm vectors of d. Plus embedding (and head if untied) and final norm.
    const int64_t per_block = 2 * d * d + 2 * d * (c.n_kv_heads * hd) + 3 * d * c.ffn_dim + 2 * d;
    const int64_t expected = c.n_layers * per_block + c.vocab_size * d * (c.tie_embeddings ? 1 : 2) + d;
    CATCH_CHECK(CountParameters(model) == expected);
    CATCH_CHECK(tessera::ParameterCount(c) == expected);
  }
}

CATCH_TEST_CASE("an explicit head_dim sets q, k, v and o apart from dim, and the counts follow") {
  ModelConfig c = Shape(48, 2, 4, 2, 64, 50, false);
  c.explicit_head_dim = 20;  // 4 x 20 = 80 channels of attention on a 48-wide stream
  Transformer model(c, 8);
  model->InitializeWeights(2);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : model->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  CATCH_CHECK(shapes["layers.0.attention.wq"] == std::vector<int64_t>{80, 48});
  CATCH_CHECK(shapes["layers.0.attention.wk"] == std::vector<int64_t>{40, 48});
  CATCH_CHECK(shapes["layers.1.attention.wv"] == std::vector<int64_t>{40, 48});
  CATCH_CHECK(shapes["layers.1.attention.wo"] == std::vector<int64_t>{48, 80});
  const int64_t per_block = 2 * 48 * 80 + 2 * 48 * 40 + 3 * 48 * 64 + 2 * 48;
  CATCH_CHECK(CountParameters(model) == 2 * per_block + 2 * 50 * 48 + 48);
  CATCH_CHECK(tessera::ParameterCount(c) == CountParameters(model));
  CATCH_CHECK(tessera::MatmulParameterCount(c) == 2 * (per_block - 2 * 48) + 50 * 48);
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->forward(torch::randint(0, 50, {2, 8}, torch::kInt64));
  CATCH_CHECK(logits.sizes() == torch::IntArrayRef({2, 8, 50}));
  CATCH_CHECK(torch::isfinite(logits).all().item<bool>());
}

CATCH_TEST_CASE("rope scaling reaches the model's rotary tables") {
  ModelConfig c = Shape(32, 1, 4, 2, 64, 40, true);
  c.rope_theta = 10000.0;
  c.rope_scaling = tessera::RopeScaling::kLinear;
  c.rope_factor = 2;
  Transformer scaled(c, 8);
  ModelConfig plain_config = c;
  plain_config.rope_scaling = tessera::RopeScaling::kNone;
  Transformer plain(plain_config, 16);
  torch::Tensor cos_scaled, cos_plain;
  for (const auto& b : scaled->named_buffers())
    if (b.key() == "rotary_cos") cos_scaled = b.value();
  for (const auto& b : plain->named_buffers())
    if (b.key() == "rotary_cos") cos_plain = b.value();
  CATCH_REQUIRE(cos_scaled.defined());
  CATCH_REQUIRE(cos_plain.defined());
  // Linear scaling by 2: position 6 rotates as position 3 did.
  CATCH_CHECK(torch::allclose(cos_scaled[6], cos_plain[3], 1e-7, 1e-7));
  CATCH_CHECK(!torch::allclose(cos_scaled[6], cos_plain[6], 1e-3, 1e-3));
}

CATCH_TEST_CASE("changing token t never changes the logits before t") {
  torch::manual_seed(4);
  Transformer model(Shape(32, 2, 4, 2, 64, 40, true), 16);
  model->InitializeWeights(9);
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(0, 40, {2, 16}, torch::kInt64);
  auto base = model->forward(tokens);
  for (int64_t t : {0, 5, 15}) {
    auto changed = tokens.clone();
    changed.select(1, t).fill_((tokens[0][t].item<int64_t>() + 1) % 40);
    auto logits = model->forward(changed);
    if (t > 0) {
      // Rows before t see exactly the same inputs; identical arithmetic, so exact equality.
      CATCH_CHECK(torch::equal(logits.narrow(1, 0, t), base.narrow(1, 0, t)));
    }
    CATCH_CHECK_FALSE(torch::allclose(logits.narrow(1, t, 1), base.narrow(1, t, 1)));
  }
}

CATCH_TEST_CASE("gradients of a tiny float64 model match finite differences") {
  torch::manual_seed(5);
  ModelConfig c = Shape(8, 2, 2, 1, 12, 11, false);
  Transformer model(c, 6);
  model->to(torch::kDouble);
  model->InitializeWeights(3);
  model->SetComputeDtype(torch::kDouble);
  // Larger weights than the default init so every path carries a visible gradient.
  {
    torch::NoGradGuard g;
    for (auto& p : model->parameters()) p.mul_(5.0).add_(0.01 * torch::randn_like(p));
  }
  auto tokens = torch::randint(0, 11, {2, 6}, torch::kInt64);
  auto targets = torch::randint(0, 11, {2, 6}, torch::kInt64);
  auto loss = model->Loss(tokens, targets);
  auto params = model->named_parameters();
  std::vector<torch::Tensor> list;
  for (auto& item : params) list.push_back(item.value());
  auto grads = torch::autograd::grad({loss}, list);
  torch::NoGradGuard no_grad;
  const double h = 1e-6;
  int checked = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    auto flat = list[i].view({-1});
    for (int64_t j : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double saved = flat[j].item<double>();
      flat[j].fill_(saved + h);
      const double up = model->Loss(tokens, targets).item<double>();
      flat[j].fill_(saved - h);
      const double down = model->Loss(tokens, targets).item<double>();
      flat[j].fill_(saved);
      const double numeric = (up - down) / (2 * h);
      const double analytic = grads[i].view({-1})[j].item<double>();
      // Central differences in fp64 with h = 1e-6: truncation ~h^2 and cancellation ~1e-16/h,
      // so agreement to ~1e-8 absolute; 1e-6 leaves margin.
      CATCH_CHECK(std::abs(numeric - analytic) < 1e-6 + 1e-5 * std::abs(analytic));
      ++checked;
    }
  }
  CATCH_CHECK(checked == 3 * static_cast<int>(list.size()));
}

namespace {

// Plain causal multi-head attention written from the definition, with the reference rotary.
torch::Tensor PlainAttention(const torch::Tensor& x, const tessera::AttentionImpl& a, int64_t heads,
                             const tessera::kernels::RotaryTables& rot) {
  const int64_t B = x.size(0), T = x.size(1), hd = a.wq.size(0) / heads;
  const int64_t kv = a.wk.size(0) / hd;
  auto q = tessera::kernels::ApplyRotaryReference(torch::matmul(x, a.wq.t()).view({B, T, heads, hd}), rot);
  auto k = tessera::kernels::ApplyRotaryReference(torch::matmul(x, a.wk.t()).view({B, T, kv, hd}), rot);
  auto v = torch::matmul(x, a.wv.t()).view({B, T, kv, hd});
  std::vector<torch::Tensor> outs;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t g = h / (heads / kv);                                  // the kv head serving query head h
    auto qh = q.select(2, h), kh = k.select(2, g), vh = v.select(2, g);  // [B, T, hd]
    auto scores = torch::matmul(qh, kh.transpose(1, 2)) / std::sqrt(static_cast<double>(hd));
    auto mask = torch::ones({T, T}, torch::kBool).triu(1);
    scores = scores.masked_fill(mask, -std::numeric_limits<double>::infinity());
    outs.push_back(torch::matmul(torch::softmax(scores, -1), vh));
  }
  return torch::matmul(torch::cat(outs, -1), a.wo.t());
}

}  // namespace

CATCH_TEST_CASE("attention equals plain multi-head attention, with and without grouped kv heads") {
  torch::manual_seed(6);
  auto rot = tessera::kernels::MakeRotaryTables(7, 8, 10000.0, torch::kCPU);
  auto x = torch::randn({2, 7, 32}, torch::kDouble);
  torch::NoGradGuard no_grad;
  for (int64_t kv : {4, 2, 1}) {
    tessera::Attention attention(Shape(32, 1, 4, kv, 64, 10, true));
    attention->to(torch::kDouble);
    for (auto& p : attention->parameters()) p.normal_(0, 0.3);
    auto ours = attention->forward(x, rot);
    // fp64 throughout: only summation order differs.
    CATCH_CHECK(torch::allclose(ours, PlainAttention(x, *attention, 4, rot), 1e-10, 1e-10));
    if (kv < 4) {
      // GQA equals MHA whose key/value heads are the shared heads repeated per group.
      tessera::Attention mha(Shape(32, 1, 4, 4, 64, 10, true));
      mha->to(torch::kDouble);
      mha->wq.copy_(attention->wq);
      mha->wo.copy_(attention->wo);
      mha->wk.copy_(attention->wk.view({kv, 1, 8, 32}).expand({kv, 4 / kv, 8, 32}).reshape({32, 32}));
      mha->wv.copy_(attention->wv.view({kv, 1, 8, 32}).expand({kv, 4 / kv, 8, 32}).reshape({32, 32}));
      CATCH_CHECK(torch::allclose(ours, mha->forward(x, rot), 1e-10, 1e-10));
    }
  }
}

CATCH_TEST_CASE("initialisation depends only on the seed and the parameter names") {
  ModelConfig c = Shape(32, 2, 4, 2, 64, 40, false);
  Transformer a(c, 8), b(c, 8);
  a->InitializeWeights(11);
  torch::manual_seed(123);  // the global generator must not matter
  b->InitializeWeights(11);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (auto& item : pa) CATCH_CHECK(torch::equal(item.value(), pb[item.key()]));
  // Output projections are scaled by 1/sqrt(2 * n_layers).
  const double std_q = a->layers[0]->attention->wq.std().item<double>();
  const double std_o = a->layers[0]->attention->wo.std().item<double>();
  CATCH_CHECK(std_q == Approx(0.02).epsilon(0.1));
  CATCH_CHECK(std_o == Approx(0.02 / 2.0).epsilon(0.1));
}

CATCH_TEST_CASE("bf16 compute stays close to fp32 and keeps fp32 weights and gradients") {
  torch::manual_seed(7);
  Transformer model(Shape(64, 2, 4, 2, 128, 100, true), 32);
  model->InitializeWeights(1);
  auto tokens = torch::randint(0, 100, {2, 32}, torch::kInt64);
  auto targets = torch::randint(0, 100, {2, 32}, torch::kInt64);
  auto fp32_loss = model->Loss(tokens, targets);
  model->SetComputeDtype(torch::kBFloat16);
  auto bf16_logits = model->forward(tokens);
  CATCH_CHECK(bf16_logits.scalar_type() == torch::kFloat);  // upcast before the softmax
  auto bf16_loss = model->Loss(tokens, targets);
  CATCH_CHECK(bf16_loss.scalar_type() == torch::kFloat);
  // bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation); over two layers the
  // loss (about ln 100 = 4.6) moves by well under 1%.
  CATCH_CHECK(bf16_loss.item<double>() == Approx(fp32_loss.item<double>()).epsilon(0.01));
  bf16_loss.backward();
  for (const auto& p : model->parameters()) {
    CATCH_CHECK(p.scalar_type() == torch::kFloat);
    CATCH_CHECK(p.grad().scalar_type() == torch::kFloat);
  }
}

namespace {

// Loss and every parameter's gradient of `config` on one seeded batch.
std::pair<double, std::map<std::string, torch::Tensor>> LossAndGrads(const ModelConfig& config,
                                                                     torch::ScalarType dtype) {
  Transformer model(config, 16);
  model->InitializeWeights(4);
  model->SetComputeDtype(dtype);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(9);
  auto tokens = at::randint(0, config.vocab_size, {2, 16}, generator, torch::kInt64);
  auto targets = at::randint(0, config.vocab_size, {2, 16}, generator, torch::kInt64);
  auto loss = model->Loss(tokens, targets);
  loss.backward();
  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : model->named_parameters()) grads[p.key()] = p.value().grad().clone();
  return {loss.item<double>(), grads};
}

}  // namespace

CATCH_TEST_CASE(
    "selective and full recomputation give the same loss and gradients, for all blocks or the first") {
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    ModelConfig c = Shape(32, 3, 4, 2, 64, 50, true);
    const auto [loss, grads] = LossAndGrads(c, dtype);
    // -1: selective (every block); else full with that recompute_layers.
    for (int64_t layers : {int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{3}}) {
      CATCH_INFO(c10::toString(dtype) << ", recompute_layers " << layers);
      c.recompute = layers < 0 ? tessera::RecomputeMode::kSelective : tessera::RecomputeMode::kFull;
      c.recompute_layers = std::max<int64_t>(layers, 0);
      const auto [recomputed_loss, recomputed_grads] = LossAndGrads(c, dtype);
      // The replayed forward is the same arithmetic on the same values, and backward through it
      // adds the same terms in the same order: bit for bit the same loss and gradients.
      CATCH_CHECK(recomputed_loss == loss);
      for (const auto& [name, g] : grads) {
        CATCH_INFO(name);
        CATCH_CHECK(torch::equal(recomputed_grads.at(name), g));
      }
    }
  }
}

CATCH_TEST_CASE("recompute_layers is checked against the largest model chunk, the same on every rank") {
  ModelConfig c = Shape(32, 8, 4, 2, 64, 50, true);
  c.recompute = tessera::RecomputeMode::kFull;
  // 8 layers over 2 stages as 5 + 3: 4 fits the first (and the second recomputes all of its 3).
  c.recompute_layers = 4;
  CATCH_CHECK(tessera::PlanPartition(c, 16, 2, 1, {5, 3}).ok());
  c.recompute_layers = 5;
  CATCH_CHECK(tessera::PlanPartition(c, 16, 2, 1, {5, 3}).ok());
  c.recompute_layers = 6;
  const absl::Status status = tessera::PlanPartition(c, 16, 2, 1, {5, 3}).status();
  CATCH_CHECK(absl::IsInvalidArgument(status));
  CATCH_CHECK(std::string(status.message())
                  .find("model.recompute_layers = 6 is more than the 5 layer(s) of the "
                        "largest model chunk (layers [0, 5))") != std::string::npos);
  // One chunk of everything: the whole model.
  c.recompute_layers = 9;
  CATCH_CHECK(!tessera::PlanPartition(c, 16, 1, 1, {}).ok());
  // Under selective or none the count is not read here (the config check refuses it).
  c.recompute = tessera::RecomputeMode::kSelective;
  CATCH_CHECK(tessera::PlanPartition(c, 16, 1, 1, {}).ok());
}

CATCH_TEST_CASE("the z-loss is added in training and left out of evaluation") {
  const ModelConfig c = Shape(32, 2, 4, 2, 64, 50, true);
  Transformer model(c, 16);
  model->InitializeWeights(4);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(9);
  auto tokens = at::randint(0, c.vocab_size, {2, 16}, generator, torch::kInt64);
  auto targets = at::randint(0, c.vocab_size, {2, 16}, generator, torch::kInt64);
  const double z = 0.5;
  // The expectation from the whole logits: cross-entropy + z * mean over tokens of log(Z)^2.
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = model->forward(tokens).reshape({-1, c.vocab_size}).to(torch::kDouble);
  }
  const double ce = torch::nn::functional::cross_entropy(logits, targets.reshape({-1})).item<double>();
  const double expected = ce + z * at::logsumexp(logits, -1).square().mean().item<double>();
  model->SetZLoss(z);
  const double trained = model->Loss(tokens, targets).item<double>();
  double evaluated = 0;
  {
    torch::NoGradGuard no_grad;
    evaluated = model->Loss(tokens, targets).item<double>();
  }
  // fp32 logits and softmax against the fp64 formula on the same logits.
  CATCH_CHECK(std::abs(trained - expected) < 1e-5 * expected);
  CATCH_CHECK(std::abs(evaluated - ce) < 1e-5 * ce);
  CATCH_CHECK(trained - evaluated > 1.0);  // log Z ~ log 50: the term is large at z = 0.5
}
