// The MLP's down projection with its SwiGLU input recomputed (model.recompute: selective):
// Linear(Swiglu(gate_up), weight) as one autograd function that saves only gate_up and forms
// silu(gate) * up again in backward (a few elementwise passes) instead of keeping it from forward
// to backward: tokens x ffn_dim / tp values in the compute dtype per layer and micro-batch in
// flight, the SwiGLU intermediate that Korthikanti et al. (2022) list among the activations that
// are cheap to recompute. The arithmetic is Swiglu's and kernels::Linear's, in the same order, so
// values and gradients are bit for bit those of the two separate functions.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

// gate_up [..., 2F] (gate first), weight [out, F] (fp32 or bf16; a bf16 weight's gradient goes to
// its fp32 .grad, as kernels::Linear's does) -> [..., out] in gate_up's dtype.
torch::Tensor SwigluLinear(const torch::Tensor& gate_up, const torch::Tensor& weight);

}  // namespace tessera::kernels
