// Rotary position embedding in the half-split layout (the one Hugging Face's Llama uses: the
// pair (i, i + head_dim/2) rotates together), so exported weights need no permutation.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

// cos and sin tables of shape [max_seq_len, head_dim / 2], fp32, on `device`.
struct RotaryTables {
  torch::Tensor cos;
  torch::Tensor sin;
};
RotaryTables MakeRotaryTables(int64_t max_seq_len, int64_t head_dim, double theta, torch::Device device);

// x: [batch, seq, heads, head_dim], positions 0..seq-1. An autograd function whose backward is
// the inverse rotation of the incoming gradient; it saves no activations.
torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& tables);

// Reference built from plain tensor ops (autograd through them), for tests.
torch::Tensor ApplyRotaryReference(const torch::Tensor& x, const RotaryTables& tables);

}  // namespace tessera::kernels
