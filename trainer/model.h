// The Llama 3 architecture as a LibTorch module: token embedding, pre-norm blocks (RMSNorm,
// grouped-query attention with rotary embeddings and a causal mask, SwiGLU MLP), final RMSNorm
// and an output head that may share the embedding. Weights are always fp32 (the master copy);
// the forward pass computes in `compute_dtype` (fp32 or bf16).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "kernels/rotary.h"
#include "trainer/config.h"

namespace tessera {

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& config);
  // x: [batch, seq, dim] in the compute dtype.
  torch::Tensor forward(const torch::Tensor& x, const kernels::RotaryTables& rotary);

  torch::Tensor wq, wk, wv, wo;  // [out_features, in_features]

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const ModelConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor w_gate, w_up, w_down;
};
TORCH_MODULE(FeedForward);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const ModelConfig& config);
  // h: the residual stream [batch, seq, dim], fp32.
  torch::Tensor forward(const torch::Tensor& h, const kernels::RotaryTables& rotary,
                        torch::ScalarType compute_dtype);

  torch::Tensor attention_norm, ffn_norm;
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};

 private:
  double norm_eps_;
};
TORCH_MODULE(Block);

class TransformerImpl : public torch::nn::Module {
 public:
  // Builds the modules; weights are set by InitializeWeights (call it once, after .to(device)).
  TransformerImpl(const ModelConfig& config, int64_t max_seq_len);

  // tokens: [batch, seq] int64 -> logits [batch, seq, vocab] in fp32.
  torch::Tensor forward(const torch::Tensor& tokens);
  // Mean cross-entropy of predicting `targets` [batch, seq]; softmax and mean in fp32.
  torch::Tensor Loss(const torch::Tensor& tokens, const torch::Tensor& targets);

  void SetComputeDtype(torch::ScalarType dtype) { compute_dtype_ = dtype; }
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  const ModelConfig& config() const { return config_; }

  // Deterministic initialisation (docs/architecture.md): each parameter is drawn on the CPU from
  // a generator seeded by (seed, parameter name), so weights do not depend on the device, the
  // construction order or (later) the parallel layout.
  void InitializeWeights(uint64_t seed);

  torch::Tensor tok_embeddings;  // [vocab, dim]
  torch::Tensor norm;            // [dim]
  torch::Tensor output;          // [vocab, dim]; undefined when tied to tok_embeddings
  std::vector<Block> layers;

 private:
  torch::Tensor Hidden(const torch::Tensor& tokens);
  torch::Tensor HeadWeight() const { return output.defined() ? output : tok_embeddings; }

  ModelConfig config_;
  kernels::RotaryTables rotary_;
  torch::ScalarType compute_dtype_ = torch::kFloat;
};
TORCH_MODULE(Transformer);

// Parameter counts of the closed formula, used by tests and MFU.
int64_t ParameterCount(const ModelConfig& config);
// Parameters that take part in matrix products per token (everything but the input embedding
// lookup and the norms; the head counts even when tied).
int64_t MatmulParameterCount(const ModelConfig& config);

}  // namespace tessera
