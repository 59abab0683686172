// RMSNorm wrapper. CUDA tensors (fp32 or bf16 in and out) go through Tessera's fused CUDA kernel
// (kernels/cuda/rms_norm_kernel.cu) as an autograd function, when this build's LibTorch has CUDA;
// everything else uses ATen's fused rms_norm (one pass forward and backward) on fp32 input. The
// residual stream is kept in fp32, so the reduction is fp32 by construction either way.
#include "kernels/rms_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>

#include "kernels/cpu_loops.h"
#include "kernels/cuda_kernels_enabled.h"

#if TESSERA_KERNELS_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/rms_norm_kernel.h"
#include "kernels/cuda_launch.h"
#endif

namespace tessera::kernels {
namespace {

#if TESSERA_KERNELS_CUDA
namespace kc = ::tessera::kernels::cuda;

constexpr char kKernel[] = "RMSNorm";

// y = x * rsqrt(mean(x^2) + eps) * weight with Tessera's kernel. Saves x, weight and the per-row
// inv_rms for the backward, which returns grad_x (x's dtype) and grad_weight (fp32). Inputs are
// made contiguous; the normalised dimension is the last.
class RmsNormCudaFunction : public torch::autograd::Function<RmsNormCudaFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps, torch::ScalarType out_dtype) {
    const torch::Tensor xc = x.contiguous();
    const torch::Tensor wc = weight.contiguous();
    const int64_t dim = xc.size(-1);
    const int64_t rows = xc.numel() / dim;
    const c10::cuda::CUDAGuard guard(xc.device());
    torch::Tensor y = torch::empty(xc.sizes(), xc.options().dtype(out_dtype));
    torch::Tensor inv_rms = torch::empty({rows}, xc.options().dtype(torch::kFloat));
    CheckKernelLaunch(kc::RmsNormForward(xc.data_ptr(), ToKernelDtype(xc.scalar_type()), wc.data_ptr<float>(),
                                         y.data_ptr(), ToKernelDtype(out_dtype), inv_rms.data_ptr<float>(),
                                         rows, dim, static_cast<float>(eps), KernelStream(xc)),
                      kKernel, "forward");
    ctx->save_for_backward({xc, wc, inv_rms});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& inv_rms = saved[2];
    torch::Tensor grad_y = grad_outputs[0].contiguous();
    if (!IsKernelDtype(grad_y.scalar_type())) grad_y = grad_y.to(torch::kFloat);
    const int64_t dim = x.size(-1);
    const int64_t rows = x.numel() / dim;
    const c10::cuda::CUDAGuard guard(x.device());
    torch::Tensor grad_x = torch::empty_like(x);
    torch::Tensor grad_w = torch::empty({dim}, x.options().dtype(torch::kFloat));
    const int64_t workspace_elements = kc::RmsNormBackwardWorkspaceElements(rows, dim);
    torch::Tensor workspace =
        torch::empty({std::max<int64_t>(workspace_elements, 1)}, x.options().dtype(torch::kFloat));
    CheckKernelLaunch(
        kc::RmsNormBackward(grad_y.data_ptr(), ToKernelDtype(grad_y.scalar_type()), x.data_ptr(),
                            ToKernelDtype(x.scalar_type()), weight.data_ptr<float>(),
                            inv_rms.data_ptr<float>(), grad_x.data_ptr(), grad_w.data_ptr<float>(),
                            workspace.data_ptr<float>(), workspace_elements, rows, dim, KernelStream(x)),
        kKernel, "backward");
    // One gradient per forward argument: none for eps and out_dtype.
    return {grad_x, grad_w, torch::Tensor(), torch::Tensor()};
  }
};

// The kernel covers what the model feeds it: CUDA, fp32/bf16 in and out, a normalised dimension
// the backward's shared memory holds, and a weight of that length on the same device.
bool UseCudaKernel(const torch::Tensor& x, const torch::Tensor& weight, torch::ScalarType out_dtype) {
  return x.is_cuda() && x.dim() >= 1 && IsKernelDtype(x.scalar_type()) && IsKernelDtype(out_dtype) &&
         x.size(-1) >= 1 && x.size(-1) <= kc::kRmsNormMaxDim && x.numel() > 0 && weight.dim() == 1 &&
         weight.size(0) == x.size(-1) && weight.device() == x.device() && weight.is_floating_point();
}
#endif  // TESSERA_KERNELS_CUDA

// fp32 CPU RMSNorm with a fused backward (ATen's CPU rms_norm fuses only the forward; its
// backward is the composite of pow, mean, rsqrt and products). Rows are split across threads;
// each fixed chunk of rows sums its own grad_w partial, and the partials are added in order.
class RmsNormCpuFunction : public torch::autograd::Function<RmsNormCpuFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    const torch::Tensor xc = x.contiguous();
    const torch::Tensor wc = weight.contiguous();
    const int64_t dim = xc.size(-1), rows = xc.numel() / dim;
    torch::Tensor y = torch::empty_like(xc);
    torch::Tensor inv_rms = torch::empty({rows}, xc.options());
    const float* xp = xc.data_ptr<float>();
    const float* wp = wc.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* ip = inv_rms.data_ptr<float>();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      cpu::RmsNormForwardRows(xp, wp, yp, ip, begin, end, dim, static_cast<float>(eps));
    });
    ctx->save_for_backward({xc, wc, inv_rms});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& inv_rms = saved[2];
    const torch::Tensor gy = grads[0].to(torch::kFloat).contiguous();
    const int64_t dim = x.size(-1), rows = x.numel() / dim;
    torch::Tensor gx = torch::empty_like(x);
    // One partial grad_w per chunk of rows; a fixed chunking keeps the sum order independent of
    // the thread count, so results are reproducible run to run.
    const int64_t chunk = std::max<int64_t>(16, (rows + 63) / 64);
    const int64_t chunks = (rows + chunk - 1) / chunk;
    torch::Tensor partial = torch::zeros({chunks, dim}, x.options());
    const float* gp = gy.data_ptr<float>();
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* ip = inv_rms.data_ptr<float>();
    float* gxp = gx.data_ptr<float>();
    float* pp = partial.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        cpu::RmsNormBackwardRows(gp, xp, wp, ip, gxp, pp + c * dim, c * chunk,
                                 std::min(rows, (c + 1) * chunk), dim);
      }
    });
    return {gx, partial.sum(0), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                      torch::ScalarType out_dtype) {
#if TESSERA_KERNELS_CUDA
  if (CudaKernelsEnabled() && UseCudaKernel(x, weight, out_dtype)) {
    // The kernel reads an fp32 weight; the cast (a no-op for the model's fp32 weights) carries
    // the gradient back to other dtypes.
    const torch::Tensor w32 = weight.scalar_type() == torch::kFloat ? weight : weight.to(torch::kFloat);
    return RmsNormCudaFunction::apply(x, w32, eps, out_dtype);
  }
#endif
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat && weight.scalar_type() == torch::kFloat) {
    torch::Tensor y = RmsNormCpuFunction::apply(x, weight, eps);
    return y.scalar_type() == out_dtype ? y : y.to(out_dtype);
  }
  // Half-precision inputs are reduced in fp32; fp32 and fp64 (gradient checks) stay as they are.
  const bool low = x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf;
  torch::Tensor x32 = low ? x.to(torch::kFloat) : x;
  torch::Tensor w32 = weight.scalar_type() == x32.scalar_type() ? weight : weight.to(x32.scalar_type());
  torch::Tensor y = at::rms_norm(x32, {x32.size(-1)}, w32, eps);
  return y.scalar_type() == out_dtype ? y : y.to(out_dtype);
}

torch::Tensor RmsNormReference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  torch::Tensor x32 = x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat);
  torch::Tensor inv_rms = torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return x32 * inv_rms * weight.to(x32.scalar_type());
}

}  // namespace tessera::kernels
