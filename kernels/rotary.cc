// Rotary embedding as a custom autograd function. For each pair (a, b) = (x[i], x[i + d/2]):
//   forward:  (a cos - b sin,  b cos + a sin)
//   backward: the transpose of that rotation, (ga cos + gb sin, gb cos - ga sin).
// Nothing is saved for backward but the (shared) tables, which halves the memory of the naive
// composition and its kernel count. CUDA fp32/bf16 tensors go through Tessera's fused kernel
// (kernels/cuda/rotary_kernel.cu) when this build's LibTorch has CUDA, fp32 CPU tensors through a
// fused loop, everything else through ATen operations.
#include "kernels/rotary.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#include <climits>
#include <cmath>

#include "kernels/cpu_loops.h"
#include "kernels/cuda_kernels_enabled.h"

#if TESSERA_KERNELS_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/rotary_kernel.h"
#include "kernels/cuda_launch.h"
#endif

namespace tessera::kernels {
namespace {

#if TESSERA_KERNELS_CUDA
namespace kc = ::tessera::kernels::cuda;

// The kernel covers what the model feeds it: CUDA fp32/bf16 [B, T, H, D] with an even D, and
// tables [>= T, D/2] on the same device.
bool UseCudaKernel(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x.is_cuda() && IsKernelDtype(x.scalar_type()) && x.dim() == 4 && x.size(3) > 0 &&
         x.size(3) % 2 == 0 && x.size(2) <= INT_MAX && cos.dim() == 2 && sin.sizes() == cos.sizes() &&
         cos.device() == x.device() && sin.device() == x.device() && cos.size(0) >= x.size(1) &&
         cos.size(1) == x.size(3) / 2;
}

// One launch of the fused kernel: fp32 arithmetic on fp32 tables whatever x's type (ATen's path
// below would round the tables to bf16 for bf16 input). x keeps its batch, sequence and head
// strides; out is contiguous.
torch::Tensor RotateCuda(const torch::Tensor& x_in, const torch::Tensor& cos, const torch::Tensor& sin,
                         double sign) {
  // The kernel reads each head vector with unit stride; a gradient that arrives otherwise (an
  // expanded one, from a sum) is copied once rather than sent down the bf16-table path.
  const torch::Tensor x = x_in.stride(-1) == 1 ? x_in : x_in.contiguous();
  const int64_t seq = x.size(1);
  const torch::Tensor c = cos.narrow(0, 0, seq).to(torch::kFloat).contiguous();
  const torch::Tensor s = sin.narrow(0, 0, seq).to(torch::kFloat).contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor out = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
  const kc::RotaryInput shape{.batch = x.size(0),
                              .seq = seq,
                              .heads = x.size(2),
                              .head_dim = x.size(3),
                              .stride_batch = x.stride(0),
                              .stride_seq = x.stride(1),
                              .stride_head = x.stride(2)};
  CheckKernelLaunch(
      kc::ApplyRotaryKernel(x.data_ptr(), shape, ToKernelDtype(x.scalar_type()), c.data_ptr<float>(),
                            s.data_ptr<float>(), out.data_ptr(),
                            sign < 0 ? kc::RotaryDirection::kInverse : kc::RotaryDirection::kForward,
                            KernelStream(x)),
      "rotary", sign < 0 ? "backward" : "forward");
  return out;
}
#endif  // TESSERA_KERNELS_CUDA

// fp32 CPU path: one fused loop per head vector (kernels/cpu_loops.cc) instead of six
// broadcasting tensor operations. Any strides for batch, sequence and heads; the head vector
// itself must be contiguous.
torch::Tensor RotateCpu(const torch::Tensor& x_in, const torch::Tensor& cos, const torch::Tensor& sin,
                        float sign) {
  const torch::Tensor x = x_in.stride(-1) == 1 ? x_in : x_in.contiguous();
  const int64_t batch = x.size(0), seq = x.size(1), heads = x.size(2), dim = x.size(3);
  const int64_t half = dim / 2;
  torch::Tensor out = torch::empty({batch, seq, heads, dim}, x.options());
  const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  const float* xp = x.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t sb = x.stride(0), st = x.stride(1), sh = x.stride(2);
  at::parallel_for(0, batch * seq * heads, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (seq * heads), t = (i / heads) % seq, h = i % heads;
      cpu::RotateRow(xp + b * sb + t * st + h * sh, op + i * dim, cp + t * half, sp + t * half, half, sign);
    }
  });
  return out;
}

// Rotates x [B, T, H, D] by angle tables [T, D/2] in direction `sign` (+1 forward, -1 inverse).
torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                     double sign) {
#if TESSERA_KERNELS_CUDA
  if (CudaKernelsEnabled() && UseCudaKernel(x, cos, sin)) return RotateCuda(x, cos, sin, sign);
#endif
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 && x.size(-1) % 2 == 0) {
    return RotateCpu(x, cos, sin, static_cast<float>(sign));
  }
  const int64_t half = x.size(-1) / 2;
  const int64_t seq = x.size(1);
  // Broadcast [T, D/2] over batch and heads: [1, T, 1, D/2].
  torch::Tensor c = cos.narrow(0, 0, seq).unsqueeze(1).to(x.scalar_type());
  torch::Tensor s = sin.narrow(0, 0, seq).unsqueeze(1).to(x.scalar_type());
  if (sign < 0) s = -s;
  torch::Tensor a = x.narrow(-1, 0, half);
  torch::Tensor b = x.narrow(-1, half, half);
  torch::Tensor out = torch::empty_like(x, x.options().memory_format(torch::MemoryFormat::Contiguous));
  torch::Tensor out_a = out.narrow(-1, 0, half);
  torch::Tensor out_b = out.narrow(-1, half, half);
  // out_a = a*c - b*s ; out_b = b*c + a*s, written in place to avoid a concatenation.
  torch::mul_out(out_a, a, c);
  out_a.sub_(b * s);
  torch::mul_out(out_b, b, c);
  out_b.add_(a * s);
  return out;
}

class RotaryFunction : public torch::autograd::Function<RotaryFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return Rotate(x, cos, sin, +1.0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::Tensor cos = ctx->saved_data["cos"].toTensor();
    torch::Tensor sin = ctx->saved_data["sin"].toTensor();
    return {Rotate(grads[0], cos, sin, -1.0), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor RotaryInverseFrequencies(int64_t head_dim, double theta, const RotaryScaling& scaling) {
  // inv_freq[i] = theta^(-2i/d), computed in fp64 so long contexts keep exact angles.
  // transformers computes the same in fp32, which moves its angles by an ulp of position x
  // inv_freq; the two agree to fp32 rounding.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor inv_freq =
      torch::pow(theta, -torch::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  const double factor = scaling.factor;
  switch (scaling.kind) {
    case RotaryScaling::Kind::kNone:
      return inv_freq;
    case RotaryScaling::Kind::kLinear:
      return inv_freq / factor;
    case RotaryScaling::Kind::kLlama3:
      break;
  }
  // Llama 3.1's scaling, term for term as transformers' _compute_llama3_parameters (the same
  // comparisons, so a wavelength on a band's edge falls where it falls there).
  const double old_context = scaling.original_max_positions;
  const double low = scaling.low_freq_factor, high = scaling.high_freq_factor;
  const double low_freq_wavelen = old_context / low;
  const double high_freq_wavelen = old_context / high;
  const torch::Tensor wavelen = 2 * M_PI / inv_freq;
  const torch::Tensor long_waves = wavelen > low_freq_wavelen;
  torch::Tensor scaled = torch::where(long_waves, inv_freq / factor, inv_freq);
  const torch::Tensor smooth = (old_context / wavelen - low) / (high - low);
  const torch::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  const torch::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(long_waves.logical_not());
  return torch::where(medium, smoothed, scaled);
}

RotaryTables MakeRotaryTables(int64_t max_seq_len, int64_t head_dim, double theta, torch::Device device,
                              const RotaryScaling& scaling) {
  const torch::Tensor inv_freq = RotaryInverseFrequencies(head_dim, theta, scaling);
  torch::Tensor positions = torch::arange(max_seq_len, torch::TensorOptions().dtype(torch::kFloat64));
  torch::Tensor angles = torch::outer(positions, inv_freq);
  return {angles.cos().to(torch::kFloat).to(device), angles.sin().to(torch::kFloat).to(device)};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const RotaryTables& tables) {
  return RotaryFunction::apply(x, tables.cos, tables.sin);
}

RotaryTables RotaryTablesAt(const RotaryTables& tables, const torch::Tensor& positions) {
  TORCH_CHECK(positions.dim() == 2 && positions.scalar_type() == torch::kLong,
              "rotary positions: int64 [batch, seq], got ", positions.scalar_type(), " ", positions.sizes());
  // No range check that would wait for the device: index_select itself rejects an index past
  // the tables (an error on the CPU, a device assertion on CUDA).
  const torch::Tensor index = positions.reshape({-1}).to(tables.cos.device());
  return {tables.cos.index_select(0, index), tables.sin.index_select(0, index)};
}

torch::Tensor ApplyRotaryPerToken(const torch::Tensor& x, const RotaryTables& per_token) {
  const int64_t batch = x.size(0), seq = x.size(1);
  TORCH_CHECK(per_token.cos.size(0) == batch * seq, "per-token rotary tables of ", per_token.cos.size(0),
              " rows for ", batch, " x ", seq, " tokens");
  // A view for the model's q and k (batch stride = seq x sequence stride); reshape copies otherwise.
  const torch::Tensor flat = x.reshape({1, batch * seq, x.size(2), x.size(3)});
  return ApplyRotary(flat, per_token).view(x.sizes());
}

torch::Tensor ApplyRotaryReference(const torch::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  const int64_t seq = x.size(1);
  torch::Tensor c = torch::cat({tables.cos, tables.cos}, -1).narrow(0, 0, seq).unsqueeze(1);
  torch::Tensor s = torch::cat({tables.sin, tables.sin}, -1).narrow(0, 0, seq).unsqueeze(1);
  torch::Tensor rotated_half = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c.to(x.scalar_type()) + rotated_half * s.to(x.scalar_type());
}

torch::Tensor ApplyRotaryFp32Reference(const torch::Tensor& x, const RotaryTables& tables, bool inverse) {
  const int64_t half = x.size(-1) / 2;
  const int64_t seq = x.size(1);
  // [1, T, 1, D/2], fp32 as stored: never rounded to x's type.
  const torch::Tensor c = tables.cos.narrow(0, 0, seq).unsqueeze(1).to(x.device(), torch::kFloat);
  torch::Tensor s = tables.sin.narrow(0, 0, seq).unsqueeze(1).to(x.device(), torch::kFloat);
  if (inverse) s = -s;
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor a = x32.narrow(-1, 0, half);
  const torch::Tensor b = x32.narrow(-1, half, half);
  // One ATen operation per product and per sum: each rounded on its own, like the kernel.
  const torch::Tensor out_a = a * c - b * s;
  const torch::Tensor out_b = b * c + a * s;
  return torch::cat({out_a, out_b}, -1).to(x.scalar_type());
}

}  // namespace tessera::kernels
