// AddRmsNorm (add_rms_norm.h). CUDA tensors of the model's types (fp32 h, fp32 or bf16 delta and
// output) go through Tessera's kernel (kernels/cuda/add_rms_norm_kernel.cu); fp32 CPU tensors
// through the CPU loops (kernels/cpu_loops.h); everything else, and CUDA under
// TESSERA_CUDA_KERNELS=0, through the composition h + delta, then kernels::RmsNorm.
//
// Backward needs the sum (the normalised input), the weight and the per-row inv_rms. The sum is
// saved as the output it is: the next sublayer consumes the same tensor (the next norm saves it
// too), so it costs no memory of its own, where saving h and delta would keep two more tensors.
#include "kernels/add_rms_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>

#include "kernels/cpu_loops.h"
#include "kernels/cuda_kernels_enabled.h"
#include "kernels/rms_norm.h"

#if TESSERA_KERNELS_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/add_rms_norm_kernel.h"
#include "kernels/cuda/rms_norm_kernel.h"
#include "kernels/cuda_launch.h"
#endif

namespace tessera::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// delta's dtype, kept for its gradient (an IValue holds no ScalarType).
void SaveDeltaDtype(AutogradContext* ctx, torch::ScalarType t) {
  ctx->saved_data["delta_dtype"] = static_cast<int64_t>(t);
}
torch::ScalarType DeltaDtype(AutogradContext* ctx) {
  return static_cast<torch::ScalarType>(ctx->saved_data["delta_dtype"].toInt());
}

// grad_delta from grad_h: the same values (d sum / d delta is the identity), in delta's dtype.
torch::Tensor DeltaGrad(const torch::Tensor& grad_h, torch::ScalarType delta_dtype) {
  return grad_h.scalar_type() == delta_dtype ? grad_h : grad_h.to(delta_dtype);
}

// CPU, fp32 h and an fp32 or bf16 delta: forward returns {sum, y (fp32)}; the caller casts y to
// the compute dtype.
class AddRmsNormCpuFunction : public torch::autograd::Function<AddRmsNormCpuFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& delta,
                               const torch::Tensor& weight, double eps) {
    const torch::Tensor hc = h.contiguous();
    const torch::Tensor dc = delta.contiguous();  // fp32 or bf16, widened in the loop
    const torch::Tensor wc = weight.contiguous();
    const int64_t dim = hc.size(-1), rows = hc.numel() / dim;
    torch::Tensor sum = torch::empty_like(hc);
    torch::Tensor y = torch::empty_like(hc);
    torch::Tensor inv_rms = torch::empty({rows}, hc.options());
    const float* hp = hc.data_ptr<float>();
    const float* wp = wc.data_ptr<float>();
    float* sp = sum.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* ip = inv_rms.data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      if (dc.scalar_type() == torch::kBFloat16) {
        const auto* dp = reinterpret_cast<const uint16_t*>(dc.data_ptr<at::BFloat16>());
        cpu::AddRmsNormForwardRowsBf16(hp, dp, wp, sp, yp, ip, begin, end, dim, static_cast<float>(eps));
      } else {
        cpu::AddRmsNormForwardRows(hp, dc.data_ptr<float>(), wp, sp, yp, ip, begin, end, dim,
                                   static_cast<float>(eps));
      }
    });
    ctx->save_for_backward({sum, wc, inv_rms});
    SaveDeltaDtype(ctx, delta.scalar_type());
    return {sum, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& sum = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& inv_rms = saved[2];
    const torch::Tensor grad_sum = grads[0].defined() ? grads[0].to(torch::kFloat).contiguous() : grads[0];
    if (!grads[1].defined()) {  // y unused: only the residual path carries a gradient
      return {grad_sum, grad_sum.defined() ? DeltaGrad(grad_sum, DeltaDtype(ctx)) : grad_sum, torch::Tensor(),
              torch::Tensor()};
    }
    const torch::Tensor gy = grads[1].to(torch::kFloat).contiguous();
    const int64_t dim = sum.size(-1), rows = sum.numel() / dim;
    torch::Tensor gh = torch::empty_like(sum);
    // Partial grad_w per fixed chunk of rows, added in order: RmsNorm's reproducible reduction.
    const int64_t chunk = std::max<int64_t>(16, (rows + 63) / 64);
    const int64_t chunks = (rows + chunk - 1) / chunk;
    torch::Tensor partial = torch::zeros({chunks, dim}, sum.options());
    const float* gyp = gy.data_ptr<float>();
    const float* gsp = grad_sum.defined() ? grad_sum.data_ptr<float>() : nullptr;
    const float* sp = sum.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* ip = inv_rms.data_ptr<float>();
    float* ghp = gh.data_ptr<float>();
    float* pp = partial.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        cpu::AddRmsNormBackwardRows(gyp, gsp, sp, wp, ip, ghp, pp + c * dim, c * chunk,
                                    std::min(rows, (c + 1) * chunk), dim);
      }
    });
    return {gh, DeltaGrad(gh, DeltaDtype(ctx)), partial.sum(0), torch::Tensor()};
  }
};

#if TESSERA_KERNELS_CUDA
namespace kc = ::tessera::kernels::cuda;

constexpr char kKernel[] = "add + RMSNorm";

// Tessera's kernel: forward returns {sum (fp32), y (out_dtype)}.
class AddRmsNormCudaFunction : public torch::autograd::Function<AddRmsNormCudaFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& delta,
                               const torch::Tensor& weight, double eps, torch::ScalarType out_dtype) {
    const torch::Tensor hc = h.contiguous();
    const torch::Tensor dc = delta.contiguous();
    const torch::Tensor wc = weight.contiguous();
    const int64_t dim = hc.size(-1), rows = hc.numel() / dim;
    const c10::cuda::CUDAGuard guard(hc.device());
    torch::Tensor sum = torch::empty_like(hc);
    torch::Tensor y = torch::empty(hc.sizes(), hc.options().dtype(out_dtype));
    torch::Tensor inv_rms = torch::empty({rows}, hc.options());
    CheckKernelLaunch(kc::AddRmsNormForward(
                          hc.data_ptr<float>(), dc.data_ptr(), ToKernelDtype(dc.scalar_type()),
                          wc.data_ptr<float>(), sum.data_ptr<float>(), y.data_ptr(), ToKernelDtype(out_dtype),
                          inv_rms.data_ptr<float>(), rows, dim, static_cast<float>(eps), KernelStream(hc)),
                      kKernel, "forward");
    ctx->save_for_backward({sum, wc, inv_rms});
    SaveDeltaDtype(ctx, delta.scalar_type());
    return {sum, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& sum = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& inv_rms = saved[2];
    const torch::ScalarType delta_dtype = DeltaDtype(ctx);
    const torch::Tensor grad_sum = grads[0].defined() ? grads[0].to(torch::kFloat).contiguous() : grads[0];
    if (!grads[1].defined()) {
      return {grad_sum, grad_sum.defined() ? DeltaGrad(grad_sum, delta_dtype) : grad_sum, torch::Tensor(),
              torch::Tensor(), torch::Tensor()};
    }
    torch::Tensor grad_y = grads[1].contiguous();
    if (!IsKernelDtype(grad_y.scalar_type())) grad_y = grad_y.to(torch::kFloat);
    const int64_t dim = sum.size(-1), rows = sum.numel() / dim;
    const c10::cuda::CUDAGuard guard(sum.device());
    torch::Tensor grad_h = torch::empty_like(sum);
    // An fp32 delta's gradient is grad_h itself; a bf16 one is written by the kernel in the same pass.
    torch::Tensor grad_delta =
        delta_dtype == torch::kFloat ? grad_h : torch::empty(sum.sizes(), sum.options().dtype(delta_dtype));
    torch::Tensor grad_w = torch::empty({dim}, sum.options());
    const int64_t workspace_elements = kc::RmsNormBackwardWorkspaceElements(rows, dim);
    torch::Tensor workspace = torch::empty({std::max<int64_t>(workspace_elements, 1)}, sum.options());
    CheckKernelLaunch(kc::AddRmsNormBackward(
                          grad_y.data_ptr(), ToKernelDtype(grad_y.scalar_type()),
                          grad_sum.defined() ? grad_sum.data_ptr<float>() : nullptr, sum.data_ptr<float>(),
                          weight.data_ptr<float>(), inv_rms.data_ptr<float>(), grad_h.data_ptr<float>(),
                          delta_dtype == torch::kFloat ? nullptr : grad_delta.data_ptr(),
                          ToKernelDtype(delta_dtype), grad_w.data_ptr<float>(), workspace.data_ptr<float>(),
                          workspace_elements, rows, dim, KernelStream(sum)),
                      kKernel, "backward");
    // One gradient per forward argument: none for eps and out_dtype.
    return {grad_h, grad_delta, grad_w, torch::Tensor(), torch::Tensor()};
  }
};

// What the kernel covers: the model's fp32 residual stream, a delta and output of fp32 or bf16
// of the same shape, a row the backward's shared memory holds, an fp32 weight of that length.
bool UseCudaKernel(const torch::Tensor& h, const torch::Tensor& delta, const torch::Tensor& weight,
                   torch::ScalarType out_dtype) {
  return h.is_cuda() && h.scalar_type() == torch::kFloat && IsKernelDtype(delta.scalar_type()) &&
         IsKernelDtype(out_dtype) && delta.device() == h.device() && delta.sizes() == h.sizes() &&
         h.dim() >= 1 && h.numel() > 0 && h.size(-1) <= kc::kRmsNormMaxDim && weight.dim() == 1 &&
         weight.size(0) == h.size(-1) && weight.device() == h.device() &&
         weight.scalar_type() == torch::kFloat;
}
#endif  // TESSERA_KERNELS_CUDA

bool UseCpuLoops(const torch::Tensor& h, const torch::Tensor& delta, const torch::Tensor& weight) {
  return h.device().is_cpu() && delta.device().is_cpu() && h.scalar_type() == torch::kFloat &&
         (delta.scalar_type() == torch::kFloat || delta.scalar_type() == torch::kBFloat16) &&
         weight.scalar_type() == torch::kFloat && delta.sizes() == h.sizes() && h.dim() >= 1 &&
         h.numel() > 0 && weight.dim() == 1 && weight.size(0) == h.size(-1);
}

}  // namespace

AddRmsNormOutput AddRmsNorm(const torch::Tensor& h, const torch::Tensor& delta, const torch::Tensor& weight,
                            double eps, torch::ScalarType out_dtype) {
  TORCH_CHECK(h.sizes() == delta.sizes(), "AddRmsNorm: the residual stream h ", h.sizes(),
              " and the sublayer output delta ", delta.sizes(), " must have the same shape");
  TORCH_CHECK(h.dim() >= 1 && weight.dim() == 1 && weight.size(0) == h.size(-1), "AddRmsNorm: the weight ",
              weight.sizes(), " must be one value per element of h's last dimension ", h.sizes());
#if TESSERA_KERNELS_CUDA
  if (CudaKernelsEnabled() && UseCudaKernel(h, delta, weight, out_dtype)) {
    variable_list out = AddRmsNormCudaFunction::apply(h, delta, weight, eps, out_dtype);
    return {out[0], out[1]};
  }
#endif
  if (UseCpuLoops(h, delta, weight)) {
    variable_list out = AddRmsNormCpuFunction::apply(h, delta, weight, eps);
    return {out[0], out[1].scalar_type() == out_dtype ? out[1] : out[1].to(out_dtype)};
  }
  torch::Tensor sum = h + delta;
  return {sum, RmsNorm(sum, weight, eps, out_dtype)};
}

AddRmsNormOutput AddRmsNormReference(const torch::Tensor& h, const torch::Tensor& delta,
                                     const torch::Tensor& weight, double eps) {
  const torch::ScalarType t = h.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  torch::Tensor sum = h.to(t) + delta.to(t);
  return {sum, RmsNormReference(sum, weight, eps)};
}

}  // namespace tessera::kernels
