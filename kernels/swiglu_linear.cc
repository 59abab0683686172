// SwigluLinear (swiglu_linear.h): the SwiGLU values formed again in backward.
#include "kernels/swiglu_linear.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <vector>

#include "kernels/linear.h"
#include "kernels/swiglu.h"

namespace tessera::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class SwigluLinearFunction : public torch::autograd::Function<SwigluLinearFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate_up,
                               const torch::Tensor& weight) {
    ctx->save_for_backward({gate_up});
    // The weight itself, not a saved copy: a bf16 weight's gradient goes to the leaf's .grad.
    ctx->saved_data["weight"] = weight;
    return LinearProduct(SwigluValues(gate_up), weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const torch::Tensor gate_up = ctx->get_saved_variables()[0];
    const torch::Tensor weight = ctx->saved_data["weight"].toTensor();
    const torch::Tensor values = SwigluValues(gate_up);  // what forward did not keep
    torch::Tensor grad_gate_up;
    if (ctx->needs_input_grad(0)) {
      grad_gate_up = SwigluGrad(LinearInputGrad(grads[0], weight, values.scalar_type()), gate_up);
    }
    std::vector<torch::Tensor> grad_weight =
        LinearWeightGrads(grads[0], values, weight, {ctx->needs_input_grad(1)});
    return {grad_gate_up, grad_weight[0]};
  }
};

}  // namespace

torch::Tensor SwigluLinear(const torch::Tensor& gate_up, const torch::Tensor& weight) {
  TORCH_CHECK(gate_up.size(-1) % 2 == 0 && weight.dim() == 2 && weight.size(1) * 2 == gate_up.size(-1),
              "SwigluLinear takes gate|up [..., 2F] and a weight [out, F], got ", gate_up.sizes(), " and ",
              weight.sizes());
  return SwigluLinearFunction::apply(gate_up, weight);
}

}  // namespace tessera::kernels
