// SwiGLU activation of the MLP: silu(gate) * up, taking the fused gate|up product directly
// ([..., 2F], gate first) and returning [..., F].
#pragma once

#include <torch/types.h>

namespace tessera::kernels {

torch::Tensor Swiglu(const torch::Tensor& gate_up);

}  // namespace tessera::kernels
