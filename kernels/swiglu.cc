// SwiGLU on the fused gate|up product: silu(gate) * up with LibTorch's vectorised silu. A fused
// fp32 CPU loop was tried and was slower: without -ffast-math, glibc offers no vector expf, so
// the loop ran scalar (docs/perf.md).
#include "kernels/swiglu.h"

#include <torch/torch.h>

namespace tessera::kernels {

torch::Tensor Swiglu(const torch::Tensor& gate_up) {
  std::vector<torch::Tensor> halves = gate_up.chunk(2, -1);
  return torch::silu(halves[0]) * halves[1];
}

}  // namespace tessera::kernels
