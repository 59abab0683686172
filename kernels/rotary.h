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

// The fused kernels' arithmetic, from plain tensor ops, for tests: x (any floating type) is
// widened to fp32 and rotated with the fp32 tables, every product and sum rounded to fp32 on its
// own (no fused multiply-add), then rounded once to x's type. The inverse rotation (the backward)
// when `inverse`. Equals the fp32 CPU path and the CUDA kernel bit for bit.
torch::Tensor ApplyRotaryFp32Reference(const torch::Tensor& x, const RotaryTables& tables,
                                       bool inverse = false);

}  // namespace tessera::kernels
