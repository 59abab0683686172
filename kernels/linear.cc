// Linear with the emulated-bf16 CPU path as an autograd function. Forward saves the bf16
// operands (not fp32 copies), so activation memory is what a bf16 GEMM would keep. Backward:
//   grad_x = (g @ W_bf16) rounded to bf16,   grad_W = g^T @ x accumulated in fp32,
// both computed by the fp32 GEMM on bf16-valued operands.
#include "kernels/linear.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace tessera::kernels {
namespace {

class EmulatedBf16Linear : public torch::autograd::Function<EmulatedBf16Linear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight) {
    torch::Tensor w16 = weight.to(torch::kBFloat16);  // the rounding a bf16 GEMM would apply
    ctx->save_for_backward({x, w16});
    return torch::linear(x.to(torch::kFloat), w16.to(torch::kFloat)).to(torch::kBFloat16);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w16 = saved[1];
    torch::Tensor g = grads[0].to(torch::kFloat);
    torch::Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) grad_x = torch::matmul(g, w16.to(torch::kFloat)).to(torch::kBFloat16);
    if (ctx->needs_input_grad(1)) {
      const int64_t out = g.size(-1), in = x.size(-1);
      grad_w = torch::mm(g.reshape({-1, out}).t(), x.reshape({-1, in}).to(torch::kFloat));
    }
    return {grad_x, grad_w};
  }
};

bool DetectNativeBf16() {
#if defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  // CPUID leaf 7 subleaf 1, EAX bit 5: AVX512_BF16.
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5))) return true;
  // CPUID leaf 7 subleaf 0, EDX bit 22: AMX-BF16.
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 22))) return true;
  return false;
#else
  return true;  // other architectures: trust LibTorch's own bf16 GEMM
#endif
}

}  // namespace

bool CpuHasNativeBf16Matmul() {
  static const bool native = DetectNativeBf16();
  return native;
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight) {
  if (x.scalar_type() == torch::kBFloat16 && x.device().is_cpu() && !CpuHasNativeBf16Matmul()) {
    return EmulatedBf16Linear::apply(x, weight);
  }
  return torch::linear(x, weight.scalar_type() == x.scalar_type() ? weight : weight.to(x.scalar_type()));
}

}  // namespace tessera::kernels
