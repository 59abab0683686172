// The bf16 Linear as autograd functions, one per path. Both save the bf16 input and the weights
// themselves (no fp32, converted or stacked copy: backward makes those again), so activation
// memory is what a bf16 GEMM keeps, and both return the weight gradient
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

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernels/weight_grad.h"

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

// Whether the weights are consecutive row blocks of one buffer, in order: the flat buffers of the
// data-parallel reducer lay q|k|v and gate|up out that way (bucket_layout.h).
bool AdjacentRows(at::TensorList weights) {
  const torch::Tensor& first = weights[0];
  if (first.dim() != 2 || !first.is_contiguous()) return false;
  for (size_t i = 1; i < weights.size(); ++i) {
    const torch::Tensor& prev = weights[i - 1];
    const torch::Tensor& w = weights[i];
    if (w.dim() != 2 || !w.is_contiguous() || w.size(1) != first.size(1) ||
        w.scalar_type() != first.scalar_type() || !w.storage().is_alias_of(first.storage()) ||
        w.storage_offset() != prev.storage_offset() + prev.numel()) {
      return false;
    }
  }
  return true;
}

// The weights stacked by output rows in bf16: one GEMM for several layers that read the same
// input (q|k|v, gate|up). Stored adjacent in bf16 (the trainer's flat buffers), it is a view and
// nothing is copied; otherwise the copy is made in forward and again in backward but never kept
// in between: saved for backward, it would hold a copy of most of a layer's weights for every
// micro-batch in flight (16 copies of each layer on the first stage of a 16-stage 1F1B pipeline).
torch::Tensor StackedBf16(at::TensorList weights) { return StackRows(weights).to(torch::kBFloat16); }

// Splits the fp32 gradient of the stacked weight back into each weight's rows; a bf16 weight
// takes its part straight into its fp32 .grad (kernels/weight_grad.h).
torch::autograd::variable_list WeightGrads(const torch::Tensor& stacked_grad, at::TensorList weights,
                                           torch::autograd::AutogradContext* ctx) {
  torch::autograd::variable_list out;
  int64_t row = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t rows = weights[i].size(0);
    if (stacked_grad.defined() && ctx->needs_input_grad(i + 1)) {
      out.push_back(AccumulateWeightGrad(weights[i], stacked_grad.narrow(0, row, rows)));
    } else {
      out.emplace_back();
    }
    row += rows;
  }
  return out;
}

bool NeedsAnyWeightGrad(torch::autograd::AutogradContext* ctx, size_t weights) {
  for (size_t i = 1; i <= weights; ++i) {
    if (ctx->needs_input_grad(i)) return true;
  }
  return false;
}

// The two bf16 paths' arithmetic, shared by the autograd functions below and by the pieces
// exported for code with its own backward (LinearProduct and friends).
torch::Tensor EmulatedProduct(const torch::Tensor& x, const torch::Tensor& w16) {
  return torch::linear(x.to(torch::kFloat), w16.to(torch::kFloat)).to(torch::kBFloat16);
}
torch::Tensor EmulatedInputGrad(const torch::Tensor& g_fp32, const torch::Tensor& w16) {
  return torch::matmul(g_fp32, w16.to(torch::kFloat)).to(torch::kBFloat16);
}
torch::Tensor NativeInputGrad(const torch::Tensor& g_bf16, const torch::Tensor& w16) {
  return torch::matmul(g_bf16, w16);
}
bool TakesEmulatedPath(const torch::Tensor& x, Bf16MatmulPath path) {
  return x.device().is_cpu() && path == Bf16MatmulPath::kEmulated;
}

class EmulatedBf16Linear : public torch::autograd::Function<EmulatedBf16Linear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               at::TensorList weights) {
    const torch::Tensor w16 = StackedBf16(weights);  // the rounding a bf16 GEMM would apply
    ctx->save_for_backward({x});
    ctx->saved_data["weights"] = weights.vec();
    return EmulatedProduct(x, w16);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const std::vector<torch::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    torch::Tensor g = grads[0].to(torch::kFloat);
    torch::Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) {
      grad_x = EmulatedInputGrad(g, StackedBf16(weights));
    }
    if (NeedsAnyWeightGrad(ctx, weights.size())) grad_w = WeightGradFp32(g, x);
    torch::autograd::variable_list out{grad_x};
    for (torch::Tensor& w : WeightGrads(grad_w, weights, ctx)) out.push_back(std::move(w));
    return out;
  }
};

class NativeBf16Linear : public torch::autograd::Function<NativeBf16Linear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               at::TensorList weights) {
    ctx->save_for_backward({x});
    ctx->saved_data["weights"] = weights.vec();
    return torch::linear(x, StackedBf16(weights));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const std::vector<torch::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    const torch::Tensor g = grads[0].to(torch::kBFloat16);
    torch::Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) grad_x = NativeInputGrad(g, StackedBf16(weights));
    if (NeedsAnyWeightGrad(ctx, weights.size())) grad_w = WeightGradFp32(g, x);
    torch::autograd::variable_list out{grad_x};
    for (torch::Tensor& w : WeightGrads(grad_w, weights, ctx)) out.push_back(std::move(w));
    return out;
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

torch::Tensor StackRows(at::TensorList weights) {
  TORCH_CHECK(!weights.empty(), "StackRows: no weights");
  if (weights.size() == 1) return weights[0];
  if (AdjacentRows(weights)) {
    int64_t rows = 0;
    for (const torch::Tensor& w : weights) rows += w.size(0);
    const int64_t in = weights[0].size(1);
    return weights[0].as_strided({rows, in}, {in, 1}, weights[0].storage_offset());
  }
  return torch::cat(weights);
}

torch::Tensor Linear(const torch::Tensor& x, at::TensorList weights, Bf16MatmulPath path) {
  TORCH_CHECK(!weights.empty(), "Linear: no weights");
  if (x.scalar_type() == torch::kBFloat16) {
    if (TakesEmulatedPath(x, path)) return EmulatedBf16Linear::apply(x, weights);
    return NativeBf16Linear::apply(x, weights);
  }
  // fp32 (and fp64, for gradient checks): weights of the same dtype, stacked by autograd's cat.
  torch::Tensor weight = weights.size() == 1 ? weights[0] : torch::cat(weights);
  return torch::linear(x, weight.scalar_type() == x.scalar_type() ? weight : weight.to(x.scalar_type()));
}

torch::Tensor Linear(const torch::Tensor& x, at::TensorList weights) {
  return Linear(x, weights, CpuBf16MatmulPath());
}

torch::Tensor LinearProduct(const torch::Tensor& x, at::TensorList weights) {
  torch::NoGradGuard no_grad;
  if (x.scalar_type() == torch::kBFloat16) {
    const torch::Tensor w16 = StackedBf16(weights);
    return TakesEmulatedPath(x, CpuBf16MatmulPath()) ? EmulatedProduct(x, w16) : torch::linear(x, w16);
  }
  return torch::linear(x, StackRows(weights).to(x.scalar_type()));
}

torch::Tensor LinearInputGrad(const torch::Tensor& grad_y, at::TensorList weights, at::ScalarType x_dtype) {
  torch::NoGradGuard no_grad;
  if (x_dtype == torch::kBFloat16) {
    const torch::Tensor w16 = StackedBf16(weights);
    return TakesEmulatedPath(grad_y, CpuBf16MatmulPath()) ? EmulatedInputGrad(grad_y.to(torch::kFloat), w16)
                                                          : NativeInputGrad(grad_y.to(torch::kBFloat16), w16);
  }
  return torch::matmul(grad_y.to(x_dtype), StackRows(weights).to(x_dtype));
}

torch::Tensor LinearWeightGradFp32(const torch::Tensor& grad_y, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  if (x.scalar_type() == torch::kBFloat16) {
    const bool emulated = TakesEmulatedPath(x, CpuBf16MatmulPath());
    return WeightGradFp32(emulated ? grad_y.to(torch::kFloat) : grad_y.to(torch::kBFloat16), x);
  }
  const int64_t out = grad_y.size(-1), in = x.size(-1);  // fp32 (fp64 stays fp64, for gradient checks)
  return torch::mm(grad_y.to(x.scalar_type()).reshape({-1, out}).t(), x.reshape({-1, in}));
}

std::vector<torch::Tensor> LinearWeightGrads(const torch::Tensor& grad_y, const torch::Tensor& x,
                                             at::TensorList weights, const std::vector<bool>& wanted) {
  TORCH_CHECK(wanted.size() == weights.size(), "LinearWeightGrads: ", wanted.size(), " flags for ",
              weights.size(), " weights");
  torch::NoGradGuard no_grad;
  const bool any = std::find(wanted.begin(), wanted.end(), true) != wanted.end();
  const torch::Tensor stacked = any ? LinearWeightGradFp32(grad_y, x) : torch::Tensor();
  std::vector<torch::Tensor> out;
  int64_t row = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t rows = weights[i].size(0);
    if (wanted[i]) {
      torch::Tensor part = AccumulateWeightGrad(weights[i], stacked.narrow(0, row, rows));
      // An fp32 weight's gradient goes back through autograd in the weight's own dtype.
      out.push_back(part.defined() ? part.to(weights[i].scalar_type()) : part);
    } else {
      out.emplace_back();
    }
    row += rows;
  }
  return out;
}

}  // namespace tessera::kernels
