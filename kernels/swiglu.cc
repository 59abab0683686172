// SwiGLU on the fused gate|up product: silu(gate) * up, as a custom autograd function whose
// backward writes d(gate) and d(up) straight into the two halves of one [..., 2F] gradient.
// The composite (chunk, silu, mul) made autograd concatenate the two half-gradients in the
// backward of chunk: a strided copy of the whole [..., 2F] tensor that took ~10% of a step of
// the tiny CPU model (docs/perf.md). LibTorch's vectorised silu and silu_backward do the
// arithmetic: a fused fp32 CPU loop was tried and was slower, since without -ffast-math glibc
// offers no vector expf and the loop ran scalar. On CUDA (fp32 or bf16, when the build has
// Tessera's kernels) each direction is one fused kernel (kernels/cuda/swiglu_kernel.cu) instead
// of LibTorch's several elementwise passes and their intermediate tensors.
#include "kernels/swiglu.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <vector>

#include "kernels/cuda_kernels_enabled.h"

#if TESSERA_KERNELS_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/swiglu_kernel.h"
#include "kernels/cuda_launch.h"
#endif

namespace tessera::kernels {
namespace {

#if TESSERA_KERNELS_CUDA
namespace kc = ::tessera::kernels::cuda;

// The kernels take what the model gives them: a CUDA tensor of fp32 or bf16 with an even, non-
// empty last dimension within the kernels' bound.
bool UseCudaKernel(const torch::Tensor& gate_up) {
  return gate_up.is_cuda() && IsKernelDtype(gate_up.scalar_type()) && gate_up.dim() >= 1 &&
         gate_up.numel() > 0 && gate_up.size(-1) % 2 == 0 && gate_up.size(-1) / 2 <= kc::kSwigluMaxF;
}

constexpr char kKernel[] = "SwiGLU";

torch::Tensor SwigluValuesCuda(const torch::Tensor& gate_up) {
  const torch::Tensor x = gate_up.contiguous();
  const int64_t f = x.size(-1) / 2;
  const int64_t rows = x.numel() / x.size(-1);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = f;
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor y = torch::empty(sizes, x.options());
  CheckKernelLaunch(
      kc::SwigluForward(x.data_ptr(), y.data_ptr(), ToKernelDtype(x.scalar_type()), rows, f, KernelStream(x)),
      kKernel, "forward");
  return y;
}

torch::Tensor SwigluGradCuda(const torch::Tensor& grad_y, const torch::Tensor& gate_up) {
  const torch::Tensor x = gate_up.contiguous();
  const torch::Tensor dy = grad_y.contiguous();
  const int64_t f = x.size(-1) / 2;
  const int64_t rows = x.numel() / x.size(-1);
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor grad = torch::empty(x.sizes(), x.options());
  CheckKernelLaunch(kc::SwigluBackward(dy.data_ptr(), x.data_ptr(), grad.data_ptr(),
                                       ToKernelDtype(x.scalar_type()), rows, f, KernelStream(x)),
                    kKernel, "backward");
  return grad;
}

// The backward kernel reads grad_y in gate_up's type and shape; anything else (a gradient of
// another dtype, say) keeps LibTorch's type promotion.
bool UseCudaKernel(const torch::Tensor& grad_y, const torch::Tensor& gate_up) {
  if (!UseCudaKernel(gate_up) || grad_y.scalar_type() != gate_up.scalar_type() ||
      grad_y.device() != gate_up.device() || grad_y.dim() != gate_up.dim()) {
    return false;
  }
  for (int64_t d = 0; d + 1 < gate_up.dim(); ++d) {
    if (grad_y.size(d) != gate_up.size(d)) return false;
  }
  return grad_y.size(-1) * 2 == gate_up.size(-1);
}
#endif  // TESSERA_KERNELS_CUDA

// fp32 for every storage type but fp64, which the references keep.
torch::ScalarType ReferenceMath(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

}  // namespace

torch::Tensor SwigluValues(const torch::Tensor& gate_up) {
#if TESSERA_KERNELS_CUDA
  if (CudaKernelsEnabled() && UseCudaKernel(gate_up)) return SwigluValuesCuda(gate_up);
#endif
  const int64_t f = gate_up.size(-1) / 2;
  return torch::silu(gate_up.narrow(-1, 0, f)) * gate_up.narrow(-1, f, f);
}

torch::Tensor SwigluGrad(const torch::Tensor& grad_y, const torch::Tensor& gate_up) {
#if TESSERA_KERNELS_CUDA
  if (CudaKernelsEnabled() && UseCudaKernel(grad_y, gate_up)) return SwigluGradCuda(grad_y, gate_up);
#endif
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

torch::Tensor SwigluValuesReference(const torch::Tensor& gate_up) {
  const int64_t f = gate_up.size(-1) / 2;
  const torch::ScalarType math = ReferenceMath(gate_up);
  const torch::Tensor g = gate_up.narrow(-1, 0, f).to(math);
  const torch::Tensor u = gate_up.narrow(-1, f, f).to(math);
  const torch::Tensor s = torch::reciprocal(1 + torch::exp(-g));
  return (g * s * u).to(gate_up.scalar_type());
}

torch::Tensor SwigluGradReference(const torch::Tensor& grad_y, const torch::Tensor& gate_up) {
  const int64_t f = gate_up.size(-1) / 2;
  const torch::ScalarType math = ReferenceMath(gate_up);
  const torch::Tensor g = gate_up.narrow(-1, 0, f).to(math);
  const torch::Tensor u = gate_up.narrow(-1, f, f).to(math);
  const torch::Tensor dy = grad_y.to(math);
  const torch::Tensor s = torch::reciprocal(1 + torch::exp(-g));
  const torch::Tensor grad_gate = dy * u * s * (1 + g * (1 - s));
  const torch::Tensor grad_up = dy * (g * s);
  return torch::cat({grad_gate, grad_up}, -1).to(gate_up.scalar_type());
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
