// Llama 3 forward pass and initialisation. Mixed precision is explicit rather than autocast:
// weights are cast to the compute dtype where they enter a matrix product (autograd returns
// fp32 gradients through the cast), the residual stream stays fp32, and RMSNorm, softmax-cross-
// entropy and the loss mean run in fp32.
#include "trainer/model.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "kernels/linear.h"
#include "kernels/rms_norm.h"
#include "kernels/swiglu.h"

namespace tessera {
namespace {

// Softmax and loss reductions never run below fp32.
torch::Tensor AtLeastFloat(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf ? t.to(torch::kFloat) : t;
}

// 64-bit FNV-1a of the name, mixed with the seed: a stable per-parameter stream.
uint64_t ParameterSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

AttentionImpl::AttentionImpl(const ModelConfig& config)
    : n_heads_(config.n_heads), n_kv_heads_(config.n_kv_heads), head_dim_(config.head_dim()) {
  const int64_t dim = config.dim;
  wq = register_parameter("wq", torch::empty({n_heads_ * head_dim_, dim}));
  wk = register_parameter("wk", torch::empty({n_kv_heads_ * head_dim_, dim}));
  wv = register_parameter("wv", torch::empty({n_kv_heads_ * head_dim_, dim}));
  wo = register_parameter("wo", torch::empty({dim, n_heads_ * head_dim_}));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const kernels::RotaryTables& rotary) {
  const int64_t batch = x.size(0), seq = x.size(1);
  // One matrix product for q, k and v: a wider GEMM runs closer to peak than three narrow ones;
  // concatenating the fp32 weights copies 3 x dim^2 floats, small beside the activations.
  std::vector<torch::Tensor> qkv = kernels::Linear(x, torch::cat({wq, wk, wv})).split_with_sizes(
      {n_heads_ * head_dim_, n_kv_heads_ * head_dim_, n_kv_heads_ * head_dim_}, -1);
  torch::Tensor q = qkv[0].view({batch, seq, n_heads_, head_dim_});
  torch::Tensor k = qkv[1].view({batch, seq, n_kv_heads_, head_dim_});
  torch::Tensor v = qkv[2].view({batch, seq, n_kv_heads_, head_dim_});
  q = kernels::ApplyRotary(q, rotary).transpose(1, 2);  // [B, H, T, hd]
  k = kernels::ApplyRotary(k, rotary).transpose(1, 2);
  v = v.transpose(1, 2);
  if (n_kv_heads_ != n_heads_) {
    // Each kv head serves n_heads / n_kv_heads consecutive query heads. Expanding here (rather
    // than enable_gqa) keeps the fused flash-attention path on every backend.
    const int64_t group = n_heads_ / n_kv_heads_;
    k = k.unsqueeze(2).expand({batch, n_kv_heads_, group, seq, head_dim_}).reshape({batch, n_heads_, seq, head_dim_});
    v = v.unsqueeze(2).expand({batch, n_kv_heads_, group, seq, head_dim_}).reshape({batch, n_heads_, seq, head_dim_});
  }
  torch::Tensor y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                     /*is_causal=*/true);
  y = y.transpose(1, 2).reshape({batch, seq, n_heads_ * head_dim_});
  return kernels::Linear(y, wo);
}

FeedForwardImpl::FeedForwardImpl(const ModelConfig& config) {
  w_gate = register_parameter("w_gate", torch::empty({config.ffn_dim, config.dim}));
  w_up = register_parameter("w_up", torch::empty({config.ffn_dim, config.dim}));
  w_down = register_parameter("w_down", torch::empty({config.dim, config.ffn_dim}));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  // gate and up in one matrix product, as for q/k/v.
  return kernels::Linear(kernels::Swiglu(kernels::Linear(x, torch::cat({w_gate, w_up}))), w_down);
}

BlockImpl::BlockImpl(const ModelConfig& config) : norm_eps_(config.norm_eps) {
  attention_norm = register_parameter("attention_norm", torch::ones({config.dim}));
  ffn_norm = register_parameter("ffn_norm", torch::ones({config.dim}));
  attention = register_module("attention", Attention(config));
  feed_forward = register_module("feed_forward", FeedForward(config));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& h, const kernels::RotaryTables& rotary,
                                 torch::ScalarType compute_dtype) {
  torch::Tensor x = h + attention->forward(
                            kernels::RmsNorm(h, attention_norm, norm_eps_, compute_dtype), rotary);
  return x + feed_forward->forward(kernels::RmsNorm(x, ffn_norm, norm_eps_, compute_dtype));
}

TransformerImpl::TransformerImpl(const ModelConfig& config, int64_t max_seq_len) : config_(config) {
  tok_embeddings = register_parameter("tok_embeddings", torch::empty({config.vocab_size, config.dim}));
  // A ModuleList gives the parameters their "layers.N." names; `layers` keeps typed handles.
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layers; ++i) {
    layers.push_back(Block(config));
    list->push_back(layers.back());
  }
  norm = register_parameter("norm", torch::ones({config.dim}));
  if (!config.tie_embeddings) {
    output = register_parameter("output", torch::empty({config.vocab_size, config.dim}));
  }
  kernels::RotaryTables tables =
      kernels::MakeRotaryTables(max_seq_len, config.head_dim(), config.rope_theta, torch::kCPU);
  // Buffers follow the module across .to(device); rotary_ shares their storage.
  rotary_.cos = register_buffer("rotary_cos", tables.cos);
  rotary_.sin = register_buffer("rotary_sin", tables.sin);
}

void TransformerImpl::InitializeWeights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  const double std = config_.init_std;
  // Residual-branch outputs are scaled down so the residual stream's variance does not grow
  // with depth (GPT-2 / Megatron convention).
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& param = item.value();
    const bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) {
      param.fill_(1.0);
      continue;
    }
    const bool is_out_proj = name.ends_with(".wo") || name.ends_with(".w_down");
    auto generator = at::make_generator<at::CPUGeneratorImpl>(ParameterSeed(seed, name));
    torch::Tensor values = at::normal(0.0, is_out_proj ? out_std : std, param.sizes(), generator,
                                      torch::TensorOptions().dtype(torch::kFloat));
    param.copy_(values);
  }
}

torch::Tensor TransformerImpl::Hidden(const torch::Tensor& tokens) {
  const int64_t seq = tokens.size(1);
  TORCH_CHECK(seq <= rotary_.cos.size(0), "sequence of ", seq, " tokens exceeds the model's maximum ",
              rotary_.cos.size(0));
  torch::Tensor h = torch::embedding(tok_embeddings, tokens);  // residual stream in the weights' dtype (fp32)
  for (Block& block : layers) h = block->forward(h, rotary_, compute_dtype_);
  return kernels::RmsNorm(h, norm, config_.norm_eps, compute_dtype_);
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& tokens) {
  return AtLeastFloat(kernels::Linear(Hidden(tokens), HeadWeight()));
}

torch::Tensor TransformerImpl::Loss(const torch::Tensor& tokens, const torch::Tensor& targets) {
  torch::Tensor logits = kernels::Linear(Hidden(tokens), HeadWeight());
  return torch::nn::functional::cross_entropy(AtLeastFloat(logits.view({-1, logits.size(-1)})),
                                              targets.reshape({-1}));
}

int64_t ParameterCount(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  const int64_t attention = c.dim * (c.n_heads * hd) * 2 + c.dim * (c.n_kv_heads * hd) * 2;
  const int64_t mlp = 3 * c.dim * c.ffn_dim;
  const int64_t block = attention + mlp + 2 * c.dim;
  const int64_t embeddings = c.vocab_size * c.dim * (c.tie_embeddings ? 1 : 2);
  return c.n_layers * block + embeddings + c.dim;
}

int64_t MatmulParameterCount(const ModelConfig& c) {
  const int64_t hd = c.head_dim();
  const int64_t attention = c.dim * (c.n_heads * hd) * 2 + c.dim * (c.n_kv_heads * hd) * 2;
  return c.n_layers * (attention + 3 * c.dim * c.ffn_dim) + c.vocab_size * c.dim;
}

}  // namespace tessera
