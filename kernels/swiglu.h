// SwiGLU activation of the MLP: silu(gate) * up, taking the fused gate|up product directly
// ([..., 2F], gate first) and returning [..., F]. CUDA tensors of fp32 or bf16 run Tessera's
// fused kernels (kernels/cuda/swiglu_kernel.h) where the build has them; others run LibTorch ops.
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

torch::Tensor Swiglu(const torch::Tensor& gate_up);

// Swiglu's two halves outside autograd, for functions that run their own backward
// (kernels/swiglu_linear.h): the values silu(gate) * up, and the gradient of gate|up from the
// output's gradient grad_y [..., F], bit for bit what Swiglu's backward gives.
torch::Tensor SwigluValues(const torch::Tensor& gate_up);
torch::Tensor SwigluGrad(const torch::Tensor& grad_y, const torch::Tensor& gate_up);

// The CUDA kernels' arithmetic on any device, for tests: s = 1 / (1 + exp(-gate)), values =
// (gate * s) * up, and the gradient [..., 2F] = [dy * up * s * (1 + gate * (1 - s)), dy * (gate *
// s)], evaluated in fp32 (fp64 for fp64 input, so that tests get an exact-enough yardstick) and
// returned in gate_up's dtype.
torch::Tensor SwigluValuesReference(const torch::Tensor& gate_up);
torch::Tensor SwigluGradReference(const torch::Tensor& grad_y, const torch::Tensor& gate_up);

}  // namespace tessera::kernels
