// SwiGLU. fp32 on CPU: one fused loop forward and one backward (kernels/cpu_loops.cc) that
// save only the gate|up input; elsewhere the LibTorch composition silu(g) * u.
#include "kernels/swiglu.h"

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#include "kernels/cpu_loops.h"

namespace tessera::kernels {
namespace {

class SwigluCpuFunction : public torch::autograd::Function<SwigluCpuFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_up) {
    const torch::Tensor in = gate_up.contiguous();
    const int64_t width = in.size(-1) / 2, rows = in.numel() / in.size(-1);
    std::vector<int64_t> shape = in.sizes().vec();
    shape.back() = width;
    torch::Tensor out = torch::empty(shape, in.options());
    const float* ip = in.data_ptr<float>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        cpu::SwigluForward(ip + r * 2 * width, ip + r * 2 * width + width, op + r * width, width);
      }
    });
    ctx->save_for_backward({in});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor in = ctx->get_saved_variables()[0];
    const torch::Tensor go = grads[0].to(torch::kFloat).contiguous();
    const int64_t width = in.size(-1) / 2, rows = in.numel() / in.size(-1);
    torch::Tensor grad_in = torch::empty_like(in);
    const float* ip = in.data_ptr<float>();
    const float* gp = go.data_ptr<float>();
    float* gi = grad_in.data_ptr<float>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t base = r * 2 * width;
        cpu::SwigluBackward(ip + base, ip + base + width, gp + r * width, gi + base, gi + base + width,
                            width);
      }
    });
    return {grad_in};
  }
};

}  // namespace

torch::Tensor Swiglu(const torch::Tensor& gate_up) {
  if (gate_up.device().is_cpu() && gate_up.scalar_type() == torch::kFloat) {
    return SwigluCpuFunction::apply(gate_up);
  }
  std::vector<torch::Tensor> halves = gate_up.chunk(2, -1);
  return torch::silu(halves[0]) * halves[1];
}

}  // namespace tessera::kernels
