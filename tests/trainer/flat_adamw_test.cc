// Tests of trainer/flat_adamw against LibTorch's own torch::optim::AdamW, and of the flat
// parameter/gradient views it sets up.
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include "tests/catch_compat.h"

CATCH_TEST_CASE("FlatAdamW follows torch::optim::AdamW with and without weight decay") {
  torch::manual_seed(3);
  auto w = torch::randn({6, 4}, torch::requires_grad());  // decayed
  auto b = torch::randn({4}, torch::requires_grad());     // not decayed
  auto w_ref = w.detach().clone().requires_grad_();
  auto b_ref = b.detach().clone().requires_grad_();
  const double wd = 0.1;
  tessera::FlatAdamW flat({{"w", w, true}, {"b", b, false}}, {0.9, 0.95, 1e-8, wd});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w_ref},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd)));
  groups.emplace_back(std::vector<torch::Tensor>{b_ref},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(std::move(groups), torch::optim::AdamWOptions(1e-2));
  auto x = torch::randn({5, 6});
  for (int step = 0; step < 5; ++step) {
    const double lr = 1e-2 * (step + 1);
    flat.ZeroGrad();
    (torch::matmul(x, w) + b).pow(2).sum().backward();
    for (auto& group : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    reference.zero_grad();
    (torch::matmul(x, w_ref) + b_ref).pow(2).sum().backward();
    CATCH_CHECK(torch::allclose(w.grad(), w_ref.grad()));
    flat.Step(lr, 1.0);
    reference.step();
    // Same arithmetic in a different order of operations: fp32 rounding only.
    CATCH_CHECK(torch::allclose(w, w_ref, 1e-5, 1e-6));
    CATCH_CHECK(torch::allclose(b, b_ref, 1e-5, 1e-6));
  }
  CATCH_CHECK(flat.numel() == 28);
  CATCH_CHECK(flat.decayed_numel() == 24);
}

CATCH_TEST_CASE("parameters and gradients are views of the flat buffers; clipping scales gradients") {
  auto a = torch::ones({3}, torch::requires_grad());
  auto m = torch::ones({2, 2}, torch::requires_grad());
  tessera::FlatAdamW flat({{"a", a, false}, {"m", m, true}}, {});
  // decayed first: m occupies [0, 4), a occupies [4, 7)
  CATCH_CHECK(m.data_ptr<float>() == flat.flat_params().data_ptr<float>());
  CATCH_CHECK(a.data_ptr<float>() == flat.flat_params().data_ptr<float>() + 4);
  (a.sum() * 3 + m.sum() * 4).backward();
  CATCH_CHECK(a.grad().data_ptr<float>() == flat.flat_grads().data_ptr<float>() + 4);
  // norm of [4,4,4,4,3,3,3] = sqrt(64 + 27)
  CATCH_CHECK(flat.GradNorm() == Approx(std::sqrt(91.0)));
  flat.ZeroGrad();
  CATCH_CHECK(flat.GradNorm() == 0.0);
  (a.sum() * 3).backward();  // accumulates into the same view
  CATCH_CHECK(flat.GradNorm() == Approx(std::sqrt(27.0)));
}
