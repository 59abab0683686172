// Inference with a key/value cache: a whole model (one process, every layer, the embedding and
// the head) runs over a prompt once, keeping each layer's rotated keys and values, and then over
// one new token at a time, attending to the cached keys and values instead of computing the
// prefix again. It calls the same kernels as the training forward (RMSNorm, the fused q|k|v
// product, rotary, LibTorch's attention, SwiGLU, the head), so its logits equal the full forward's
// up to the order of float sums in attention. The training forward is untouched.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/rotary.h"

namespace tessera {

class TransformerImpl;

class KvCache {
 public:
  // A cache for up to `capacity` positions of `model`, which must hold the whole model (no
  // tensor parallelism, not a pipeline chunk, weights present). The model must outlive the cache.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(TransformerImpl& model, int64_t capacity);

  // Runs int64 tokens [batch, T] at positions length() .. length() + T - 1 (attending to every
  // earlier position of the same row), appends their keys and values and returns fp32 logits
  // [batch, T, vocab_size], or only the last position's [batch, 1, vocab_size] with `last_only`.
  // The batch is fixed by the first call. No gradients are recorded.
  torch::Tensor Append(const torch::Tensor& tokens, bool last_only = false);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }

 private:
  KvCache(TransformerImpl& model, int64_t capacity);
  // Layer `layer`'s attention of the normalised input x [batch, T, dim]: its output after wo.
  torch::Tensor Attend(size_t layer, const torch::Tensor& x);

  TransformerImpl* model_;
  int64_t capacity_;
  int64_t length_ = 0;
  kernels::RotaryTables rotary_;              // positions 0 .. capacity - 1
  std::vector<torch::Tensor> keys_, values_;  // per layer [batch, kv_heads, capacity, head_dim]
};

}  // namespace tessera
