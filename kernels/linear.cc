// The bf16 Linear as autograd functions, one per path. Both save the bf16 operands (not fp32
// copies), so activation memory is what a bf16 GEMM keeps, and both return the weight gradient
// in fp32, never rounded to bf16: summed over the micro-steps of gradient accumulation, bf16
// rounding of each step's gradient (what autograd through `weight.to(bf16)` does) would add a
// relative error of up to 2^-9 per step (tests/kernels/linear_test.cc shows it).
//   emulated: y, grad_x and grad_W by the fp32 GEMM on bf16-valued operands; y and grad_x
//             rounded to bf16;
//   native:   y and grad_x by LibTorch's bf16 GEMM; grad_W = g^T x with fp32 output: on CUDA by
//             the bf16 GEMM with fp32 output (mm with out_dtype), elsewhere by the fp32 GEMM on
//             the bf16 values (ATen has no bf16 GEMM with fp32 output on the CPU).
#include "kernels/linear.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace tessera::kernels {
namespace {

// g^T x for g [..., out], x [..., in] holding bf16 values as an fp32 [out, in] matrix, unrounded:
// on CUDA by the bf16 GEMM with fp32 output, elsewhere by the fp32 GEMM.
torch::Tensor WeightGradFp32(const torch::Tensor& g, const torch::Tensor& x) {
  const int64_t out = g.size(-1), in = x.size(-1);
  const torch::Tensor g2 = g.reshape({-1, out}), x2 = x.reshape({-1, in});
  if (g2.is_cuda()) return at::mm(g2.t(), x2, torch::kFloat);
  return torch::mm(g2.t().to(torch::kFloat), x2.to(torch::kFloat));
}

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
    if (ctx->needs_input_grad(1)) grad_w = WeightGradFp32(g, x);
    return {grad_x, grad_w};
  }
};

// Autograd casts each returned gradient to its input's dtype, so a bf16 weight gets its fp32
// gradient rounded once, there.
class NativeBf16Linear : public torch::autograd::Function<NativeBf16Linear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight) {
    torch::Tensor w16 = weight.to(torch::kBFloat16);
    ctx->save_for_backward({x, w16});
    return torch::linear(x, w16);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w16 = saved[1];
    const torch::Tensor g = grads[0].to(torch::kBFloat16);
    torch::Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) grad_x = torch::matmul(g, w16);
    if (ctx->needs_input_grad(1)) grad_w = WeightGradFp32(g, x);
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

// TESSERA_BF16_MATMUL, or "" when unset or not one of the two names.
std::string ForcedPathName() {
  const char* value = std::getenv("TESSERA_BF16_MATMUL");
  const std::string name = value ? value : "";
  return name == "native" || name == "emulated" ? name : "";
}

}  // namespace

bool CpuHasNativeBf16Matmul() {
  static const bool native = DetectNativeBf16();
  return native;
}

Bf16MatmulPath CpuBf16MatmulPath() {
  static const Bf16MatmulPath path = [] {
    const std::string forced = ForcedPathName();
    if (!forced.empty()) return forced == "native" ? Bf16MatmulPath::kNative : Bf16MatmulPath::kEmulated;
    return CpuHasNativeBf16Matmul() ? Bf16MatmulPath::kNative : Bf16MatmulPath::kEmulated;
  }();
  return path;
}

std::string DescribeCpuBf16MatmulPath() {
  std::string text = CpuBf16MatmulPath() == Bf16MatmulPath::kNative
                         ? "native (LibTorch's bf16 GEMM)"
                         : "emulated (bf16-rounded operands on the fp32 GEMM)";
  text += CpuHasNativeBf16Matmul() ? "; the CPU has AVX512-BF16/AMX" : "; the CPU has no bf16 units";
  if (!ForcedPathName().empty()) {
    text += "; forced by TESSERA_BF16_MATMUL";
  } else if (const char* value = std::getenv("TESSERA_BF16_MATMUL"); value != nullptr && *value != '\0') {
    text += std::string("; TESSERA_BF16_MATMUL='") + value + "' ignored: expected native or emulated";
  }
  return text;
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight, Bf16MatmulPath path) {
  if (x.scalar_type() == torch::kBFloat16) {
    if (x.device().is_cpu() && path == Bf16MatmulPath::kEmulated) return EmulatedBf16Linear::apply(x, weight);
    return NativeBf16Linear::apply(x, weight);
  }
  return torch::linear(x, weight.scalar_type() == x.scalar_type() ? weight : weight.to(x.scalar_type()));
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& weight) {
  return Linear(x, weight, CpuBf16MatmulPath());
}

}  // namespace tessera::kernels
