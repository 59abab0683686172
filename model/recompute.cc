// Recompute (recompute.h): an autograd function whose backward replays its forward.
#include "model/recompute.h"

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/torch.h>

#include <utility>

namespace tessera {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The function, kept in the autograd context (saved_data holds IValues: a capsule carries it).
struct RecomputedFunction : torch::CustomClassHolder {
  explicit RecomputedFunction(std::function<torch::Tensor(const torch::Tensor&)> f) : fn(std::move(f)) {}
  std::function<torch::Tensor(const torch::Tensor&)> fn;
};

class RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
 public:
  // The parameters are inputs for their edges only: nothing of them is saved.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               c10::intrusive_ptr<RecomputedFunction> fn, at::TensorList params) {
    ctx->save_for_backward({x});
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;  // nothing inside is saved
      y = fn->fn(x);
    }
    ctx->saved_data["fn"] = c10::IValue::make_capsule(std::move(fn));
    ctx->saved_data["params"] = params.vec();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    auto fn = c10::static_intrusive_pointer_cast<RecomputedFunction>(ctx->saved_data["fn"].toCapsule());
    const std::vector<torch::Tensor> params = ctx->saved_data["params"].toTensorVector();
    // A fresh leaf for the input, so the replayed graph ends here.
    const torch::Tensor input = x.detach().requires_grad_(x.requires_grad());
    torch::Tensor y;
    {
      torch::AutoGradMode enable_grad(true);
      y = fn->fn(input);
    }
    // Edges: 0 the input, 1 + i parameter i (the capsule is no tensor and has none). Only what
    // this pass wants is differentiated.
    std::vector<torch::Tensor> wrt;
    std::vector<size_t> slot;  // wrt[k] is the backward's output slot[k]
    if (ctx->needs_input_grad(0) && input.requires_grad()) {
      wrt.push_back(input);
      slot.push_back(0);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (ctx->needs_input_grad(1 + i) && params[i].requires_grad()) {
        wrt.push_back(params[i]);
        slot.push_back(2 + i);
      }
    }
    variable_list out(2 + params.size());
    if (wrt.empty() || !y.requires_grad()) return out;
    const variable_list got = torch::autograd::grad({y}, wrt, {grads[0]}, /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < got.size(); ++k) out[slot[k]] = got[k];
    return out;
  }
};

}  // namespace

torch::Tensor Recompute(const torch::Tensor& x, std::function<torch::Tensor(const torch::Tensor&)> fn,
                        const std::vector<torch::Tensor>& params) {
  // Without the graph nothing would be saved anyway.
  if (!torch::GradMode::is_enabled()) return fn(x);
  bool any = x.requires_grad();
  for (const torch::Tensor& p : params) any = any || p.requires_grad();
  if (!any) return fn(x);
  // As a TensorList, each parameter one input with its edge (a std::vector would be one opaque
  // argument).
  return RecomputeFunction::apply(x, c10::make_intrusive<RecomputedFunction>(std::move(fn)),
                                  at::TensorList(params));
}

}  // namespace tessera
