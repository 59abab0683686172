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

// Rescaling of the frequencies inv_freq[i] = theta^(-2i/head_dim), as transformers' rope_type
// (modeling_rope_utils.py). kLinear: inv_freq / factor (positions divided by factor). kLlama3
// (Llama 3.1, _compute_llama3_parameters): with wavelen = 2 pi / inv_freq, wavelengths below
// original_max_positions / high_freq_factor keep their frequency, those above
// original_max_positions / low_freq_factor take inv_freq / factor, and those between blend the two
// with s = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor -
// low_freq_factor): (1 - s) inv_freq / factor + s inv_freq.
struct RotaryScaling {
  enum class Kind { kNone, kLlama3, kLinear };
  Kind kind = Kind::kNone;
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  double original_max_positions = 8192;
};

// The scaled inverse frequencies [head_dim / 2], fp64.
torch::Tensor RotaryInverseFrequencies(int64_t head_dim, double theta, const RotaryScaling& scaling);
RotaryTables MakeRotaryTables(int64_t max_seq_len, int64_t head_dim, double theta, torch::Device device,
                              const RotaryScaling& scaling = {});

// x: [batch, seq, heads, head_dim], positions 0..seq-1. An autograd function whose backward is
// the inverse rotation of the incoming gradient; it saves no activations.
torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& tables);

// Per-token positions (data.reset_position_ids): the tables' rows at `positions` [batch, seq]
// (int64, any device), [batch * seq, head_dim / 2] on the tables' device.
RotaryTables RotaryTablesAt(const RotaryTables& tables, const torch::Tensor& positions);
// x: [batch, seq, heads, head_dim] rotated with per-token tables from RotaryTablesAt: the
// batch and sequence are seen as one sequence of batch x seq tokens whose row i of the tables
// is token i's, so the same function (and the fused CPU and CUDA kernels) run unchanged.
torch::Tensor ApplyRotaryPerToken(const torch::Tensor& x, const RotaryTables& per_token);

// Reference built from plain tensor ops (autograd through them), for tests.
torch::Tensor ApplyRotaryReference(const torch::Tensor& x, const RotaryTables& tables);

// The fused kernels' arithmetic, from plain tensor ops, for tests: x (any floating type) is
// widened to fp32 and rotated with the fp32 tables, every product and sum rounded to fp32 on its
// own (no fused multiply-add), then rounded once to x's type. The inverse rotation (the backward)
// when `inverse`. Equals the fp32 CPU path and the CUDA kernel bit for bit.
torch::Tensor ApplyRotaryFp32Reference(const torch::Tensor& x, const RotaryTables& tables,
                                       bool inverse = false);

}  // namespace tessera::kernels
