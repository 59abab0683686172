// The cached forward: model.cc's block, attention and head, written for positions that start at
// length() rather than 0. Only the attention differs from the training forward: the rotary
// tables are read from the absolute position on, and the queries attend to the cache.
#include "model/kv_cache.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "kernels/attention_backend.h"
#include "kernels/rms_norm.h"
#include "kernels/weight_grad.h"
#include "model/model.h"
#include "parallel/tensor_parallel/layers.h"
#include "parallel/tensor_parallel/vocab_parallel.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(TransformerImpl& model, int64_t capacity) {
  const ModelConfig& config = model.config();
  if (model.tp_size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the key/value cache runs a whole model; this one is split over tp = ", model.tp_size()));
  }
  if (model.first_layer() != 0 || model.num_layers() != config.n_layers || !model.tok_embeddings.defined() ||
      !model.norm.defined()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the key/value cache runs a whole model; this one is a pipeline chunk (layers ", model.first_layer(),
        "..", model.first_layer() + model.num_layers(), " of ", config.n_layers, ")"));
  }
  if (capacity < 1) return absl::InvalidArgumentError(absl::StrCat("cache capacity ", capacity, " < 1"));
  return std::unique_ptr<KvCache>(new KvCache(model, capacity));
}

KvCache::KvCache(TransformerImpl& model, int64_t capacity) : model_(&model), capacity_(capacity) {
  const ModelConfig& config = model.config();
  // The same function and arguments as the model's own tables, so position p has the same angles.
  rotary_ = kernels::MakeRotaryTables(capacity, config.head_dim(), config.rope_theta,
                                      model.tok_embeddings.device(), RotaryScalingOf(config));
  keys_.resize(model.layers.size());
  values_.resize(model.layers.size());
}

torch::Tensor KvCache::Attend(size_t layer, const torch::Tensor& x) {
  const ModelConfig& config = model_->config();
  AttentionImpl& attention = *model_->layers[layer]->attention;
  const int64_t batch = x.size(0), seq = x.size(1), hd = config.head_dim();
  const int64_t heads = config.n_heads, kv_heads = config.n_kv_heads;
  const torch::Tensor fused =
      parallel::ColumnParallelLinear(x, {attention.wq, attention.wk, attention.wv}, nullptr, false);
  std::vector<torch::Tensor> qkv = fused.split_with_sizes({heads * hd, kv_heads * hd, kv_heads * hd}, -1);
  // The angles of positions length_ .. length_ + seq - 1: ApplyRotary rotates row t by row t.
  const kernels::RotaryTables angles{rotary_.cos.narrow(0, length_, seq),
                                     rotary_.sin.narrow(0, length_, seq)};
  torch::Tensor q = kernels::ApplyRotary(qkv[0].view({batch, seq, heads, hd}), angles).transpose(1, 2);
  torch::Tensor k = kernels::ApplyRotary(qkv[1].view({batch, seq, kv_heads, hd}), angles).transpose(1, 2);
  torch::Tensor v = qkv[2].view({batch, seq, kv_heads, hd}).transpose(1, 2);
  if (!keys_[layer].defined()) {
    keys_[layer] = torch::zeros({batch, kv_heads, capacity_, hd}, k.options());
    values_[layer] = torch::zeros({batch, kv_heads, capacity_, hd}, v.options());
  }
  const int64_t total = length_ + seq;
  keys_[layer].narrow(2, length_, seq).copy_(k);
  values_[layer].narrow(2, length_, seq).copy_(v);
  k = keys_[layer].narrow(2, 0, total);
  v = values_[layer].narrow(2, 0, total);
  // As the training forward: grouped kv heads read natively where a fused kernel can, else expanded.
  const bool grouped = kv_heads != heads;
  const bool native_gqa = grouped && kernels::NativeGroupedAttention(q, k, v);
  if (grouped && !native_gqa) {
    const int64_t group = heads / kv_heads;
    k = k.unsqueeze(2).expand({batch, kv_heads, group, total, hd}).reshape({batch, heads, total, hd});
    v = v.unsqueeze(2).expand({batch, kv_heads, group, total, hd}).reshape({batch, heads, total, hd});
  }
  // The prompt (nothing cached yet) is the training forward's causal attention; one new token
  // sees everything; several new tokens after a cached prefix take an explicit mask (LibTorch's
  // is_causal aligns the diagonal top-left, which is wrong when the keys outnumber the queries).
  torch::Tensor mask;
  if (length_ > 0 && seq > 1) {
    const auto positions = torch::TensorOptions().dtype(torch::kLong).device(x.device());
    mask = torch::arange(total, positions).unsqueeze(0) <=
           (torch::arange(seq, positions) + length_).unsqueeze(1);
  }
  torch::Tensor y = at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt, /*dropout_p=*/0.0,
      /*is_causal=*/length_ == 0 && seq > 1,
      /*scale=*/std::nullopt, /*enable_gqa=*/native_gqa);
  y = y.transpose(1, 2).reshape({batch, seq, heads * hd});
  return parallel::RowParallelLinear(y, attention.wo, nullptr, false);
}

torch::Tensor KvCache::Append(const torch::Tensor& tokens, bool last_only) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == torch::kLong,
              "the key/value cache takes int64 tokens [batch, seq], got ", tokens.scalar_type(), " ",
              tokens.sizes());
  const int64_t seq = tokens.size(1);
  TORCH_CHECK(seq >= 1 && length_ + seq <= capacity_, "the key/value cache holds ", capacity_,
              " positions: ", length_, " cached + ", seq, " new do not fit");
  TORCH_CHECK(keys_.empty() || !keys_[0].defined() || keys_[0].size(0) == tokens.size(0),
              "the key/value cache was started with batch ", keys_.empty() ? 0 : keys_[0].size(0), ", got ",
              tokens.size(0));
  torch::NoGradGuard no_grad;
  TransformerImpl& m = *model_;
  const ModelConfig& config = m.config();
  const torch::ScalarType dtype = m.compute_dtype();
  const double eps = config.norm_eps;
  torch::Tensor h = parallel::VocabParallelEmbedding(tokens, m.tok_embeddings, 0, nullptr, false);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    BlockImpl& block = *m.layers[i];
    const torch::Tensor x =
        h + Attend(i, kernels::RmsNorm(h, kernels::Fp32Weight(block.attention_norm), eps, dtype));
    h = x + block.feed_forward->forward(kernels::RmsNorm(x, kernels::Fp32Weight(block.ffn_norm), eps, dtype));
  }
  length_ += seq;
  if (last_only) h = h.narrow(1, seq - 1, 1);
  const torch::Tensor hidden = kernels::RmsNorm(h, kernels::Fp32Weight(m.norm), eps, dtype);
  const torch::Tensor head = m.output.defined() ? m.output : m.tok_embeddings;
  torch::Tensor logits = parallel::ColumnParallelLinear(hidden, {head}, nullptr, false);
  return logits.to(torch::kFloat).narrow(-1, 0, config.vocab_size);
}

}  // namespace tessera
