// SwiGLU activation of the MLP: silu(gate) * up, taking the fused gate|up product directly
// ([..., 2F], gate first) and returning [..., F].
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

torch::Tensor Swiglu(const torch::Tensor& gate_up);

// Swiglu's two halves outside autograd, for functions that run their own backward
// (kernels/swiglu_linear.h): the values silu(gate) * up, and the gradient of gate|up from the
// output's gradient grad_y [..., F], bit for bit what Swiglu's backward gives.
torch::Tensor SwigluValues(const torch::Tensor& gate_up);
torch::Tensor SwigluGrad(const torch::Tensor& grad_y, const torch::Tensor& gate_up);

}  // namespace tessera::kernels
