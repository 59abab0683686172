// SwiGLU on the fused gate|up product: silu(gate) * up, as a custom autograd function whose
// backward writes d(gate) and d(up) straight into the two halves of one [..., 2F] gradient.
// The composite (chunk, silu, mul) made autograd concatenate the two half-gradients in the
// backward of chunk: a strided copy of the whole [..., 2F] tensor that took ~10% of a step of
// the tiny CPU model (docs/perf.md). LibTorch's vectorised silu and silu_backward do the
// arithmetic: a fused fp32 CPU loop was tried and was slower, since without -ffast-math glibc
// offers no vector expf and the loop ran scalar.
#include "kernels/swiglu.h"

#include <torch/autograd.h>
#include <torch/torch.h>

namespace tessera::kernels {

torch::Tensor SwigluValues(const torch::Tensor& gate_up) {
  const int64_t f = gate_up.size(-1) / 2;
  return torch::silu(gate_up.narrow(-1, 0, f)) * gate_up.narrow(-1, f, f);
}

torch::Tensor SwigluGrad(const torch::Tensor& grad_y, const torch::Tensor& gate_up) {
  const int64_t f = gate_up.size(-1) / 2;
  const torch::Tensor gate = gate_up.narrow(-1, 0, f);
  const torch::Tensor up = gate_up.narrow(-1, f, f);
  torch::Tensor grad =
      torch::empty_like(gate_up, gate_up.options().memory_format(torch::MemoryFormat::Contiguous));
  torch::Tensor grad_gate = grad.narrow(-1, 0, f);
  torch::Tensor grad_up = grad.narrow(-1, f, f);
  // The same operations as autograd's backward of silu(gate) * up, so the result is unchanged
  // bit for bit: d(up) = dy * silu(gate) (recomputed rather than saved), d(gate) =
  // silu_backward(dy * up, gate).
  torch::mul_out(grad_up, grad_y, torch::silu(gate));
  at::silu_backward_out(grad_gate, grad_y * up, gate);
  return grad;
}

namespace {

class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_up) {
    ctx->save_for_backward({gate_up});
    return SwigluValues(gate_up);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {SwigluGrad(grads[0], ctx->get_saved_variables()[0])};
  }
};

}  // namespace

torch::Tensor Swiglu(const torch::Tensor& gate_up) {
  TORCH_CHECK(gate_up.size(-1) % 2 == 0,
              "Swiglu takes the fused gate|up product [..., 2F], got last dimension ", gate_up.size(-1));
  return SwigluFunction::apply(gate_up);
}

}  // namespace tessera::kernels
