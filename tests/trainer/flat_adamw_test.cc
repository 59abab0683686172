// Tests of trainer/flat_adamw against LibTorch's own torch::optim::AdamW, over the flat buffers
// the data-parallel reducer lays out (one process: the reducer's ranges are every bucket whole),
// and of those buffers' views, bucketing and gradient norm.
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include "kernels/weight_grad.h"
#include "parallel/process_grid.h"
#include "tests/catch_compat.h"
#include "tests/trainer/trainer_test_util.h"

using tessera::trainer_testing::LocalGrid;

namespace {

std::unique_ptr<tessera::parallel::GradReducer> Reducer(
    std::vector<tessera::parallel::DataParallelParameter> params, int zero = 0, double bucket_mb = 25) {
  auto r = tessera::parallel::GradReducer::Create(std::move(params), LocalGrid().dp(), {zero, bucket_mb});
  if (!r.ok()) CATCH_FAIL(std::string(r.status().message()));
  return *std::move(r);
}

}  // namespace

CATCH_TEST_CASE("FlatAdamW follows torch::optim::AdamW with and without weight decay") {
  for (int zero : {0, 1, 2}) {
    torch::manual_seed(3);
    auto w = torch::randn({6, 4}, torch::requires_grad());  // decayed
    auto b = torch::randn({4}, torch::requires_grad());     // not decayed
    auto w_ref = w.detach().clone().requires_grad_();
    auto b_ref = b.detach().clone().requires_grad_();
    const double wd = 0.1;
    // A tiny bucket size puts w and b in separate buckets.
    auto reducer = Reducer({{"w", w, true}, {"b", b, false}}, zero, 1e-5);
    CATCH_CHECK(reducer->num_buckets() == 2);
    tessera::FlatAdamW flat(reducer->owned(), {0.9, 0.95, 1e-8, wd});
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{w_ref},
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd)));
    groups.emplace_back(std::vector<torch::Tensor>{b_ref},
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
    torch::optim::AdamW reference(std::move(groups), torch::optim::AdamWOptions(1e-2));
    auto x = torch::randn({5, 6});
    for (int step = 0; step < 5; ++step) {
      const double lr = 1e-2 * (step + 1);
      reducer->ZeroGrad();
      reducer->MarkFinalBackward();
      (torch::matmul(x, w) + b).pow(2).sum().backward();
      CATCH_REQUIRE(reducer->FinishBackward(nullptr).ok());
      for (auto& group : reference.param_groups())
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      reference.zero_grad();
      (torch::matmul(x, w_ref) + b_ref).pow(2).sum().backward();
      auto norm = reducer->GlobalGradNorm(LocalGrid().world());
      CATCH_REQUIRE(norm.ok());
      const double expected =
          std::sqrt(w_ref.grad().square().sum().item<double>() + b_ref.grad().square().sum().item<double>());
      CATCH_CHECK(*norm == Approx(expected).epsilon(1e-6));  // fp32 sums in another order
      flat.Step(lr, 1.0);
      CATCH_REQUIRE(reducer->GatherParams().ok());
      reference.step();
      // Same arithmetic in a different order of operations: fp32 rounding only.
      CATCH_CHECK(torch::allclose(w, w_ref, 1e-5, 1e-6));
      CATCH_CHECK(torch::allclose(b, b_ref, 1e-5, 1e-6));
    }
    CATCH_CHECK(flat.numel() == 28);
    CATCH_CHECK(flat.decayed_numel() == 24);
  }
}

CATCH_TEST_CASE("parameters and gradients are views of the flat buffers, and accumulation adds up") {
  auto a = torch::ones({3}, torch::requires_grad());
  auto m = torch::ones({2, 2}, torch::requires_grad());
  // One bucket, in reverse order of use, decayed first: m occupies [0, 4), a occupies [4, 7).
  auto reducer = Reducer({{"a", a, false}, {"m", m, true}});
  const auto& owned = reducer->owned();
  CATCH_REQUIRE(owned.size() == 1);
  CATCH_CHECK(owned[0].decayed == 4);
  CATCH_CHECK(m.data_ptr<float>() == owned[0].params.data_ptr<float>());
  CATCH_CHECK(a.data_ptr<float>() == owned[0].params.data_ptr<float>() + 4);
  reducer->ZeroGrad();
  (a.sum() * 3 + m.sum() * 4).backward();
  CATCH_CHECK(a.grad().data_ptr<float>() == owned[0].grads.data_ptr<float>() + 4);
  CATCH_CHECK(reducer->last_events().empty());  // not final yet: nothing reduced
  reducer->MarkFinalBackward();
  (a.sum() * 3).backward();  // accumulates into the same view
  CATCH_REQUIRE(reducer->FinishBackward(nullptr).ok());
  // [4,4,4,4,6,6,6]: sqrt(64 + 108)
  auto norm = reducer->GlobalGradNorm(LocalGrid().world());
  CATCH_REQUIRE(norm.ok());
  CATCH_CHECK(*norm == Approx(std::sqrt(172.0)));
  CATCH_CHECK(reducer->last_events().size() == 1);
  reducer->ZeroGrad();
  CATCH_CHECK(owned[0].grads.abs().sum().item<float>() == 0.0f);
}

CATCH_TEST_CASE("bad reducer options are refused with the number") {
  auto a = torch::ones({3}, torch::requires_grad());
  auto bad = tessera::parallel::GradReducer::Create({{"a", a, true}}, LocalGrid().dp(), {0, 0.0});
  CATCH_REQUIRE_FALSE(bad.ok());
  CATCH_CHECK(std::string(bad.status().message()).find("parallel.bucket_mb = 0") != std::string::npos);
}

CATCH_TEST_CASE(
    "the fused CPU pass matches torch::optim::AdamW across chunks, a mid-range decay split and clipping") {
  torch::manual_seed(11);
  // 257 x 513 = 131841 decayed elements then 70001 that are not, in one bucket: the decay split
  // falls inside the range and inside a 64K-element parallel chunk, and the tail is ragged.
  auto w = torch::randn({257, 513}, torch::requires_grad());
  auto b = torch::randn({70001}, torch::requires_grad());
  auto w_ref = w.detach().clone().requires_grad_();
  auto b_ref = b.detach().clone().requires_grad_();
  auto reducer = Reducer({{"w", w, true}, {"b", b, false}});
  CATCH_REQUIRE(reducer->num_buckets() == 1);
  tessera::FlatAdamW flat(reducer->owned(), {0.9, 0.95, 1e-8, 0.1});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w_ref},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{b_ref},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(std::move(groups), torch::optim::AdamWOptions(1e-3));
  const double scale = 0.37;  // a clipping factor
  for (int step = 0; step < 4; ++step) {
    const auto cw = torch::randn({257, 513}), cb = torch::randn({70001});
    reducer->ZeroGrad();
    reducer->MarkFinalBackward();
    ((w * cw).sum() + (b * cb).sum()).backward();
    CATCH_REQUIRE(reducer->FinishBackward(nullptr).ok());
    const torch::Tensor grads_before = reducer->owned().front().grads.clone();
    flat.Step(1e-3, scale);
    CATCH_CHECK(torch::equal(reducer->owned().front().grads, grads_before));  // left as they are
    CATCH_REQUIRE(reducer->GatherParams().ok());
    reference.zero_grad();
    ((w_ref * (cw * scale)).sum() + (b_ref * (cb * scale)).sum()).backward();
    reference.step();
    // fp32 rounding only: the same operations, but torch forms m and the decay differently.
    CATCH_CHECK(torch::allclose(w, w_ref, 1e-5, 1e-6));
    CATCH_CHECK(torch::allclose(b, b_ref, 1e-5, 1e-6));
  }
  // The moments too: a wrong update of m or v shows here before it shows in the parameters.
  // torch::optim::AdamW forms m as b1 m + (1 - b1) g, Tessera as LibTorch's lerp_ does,
  // m + (1 - b1)(g - m): equal up to fp32 rounding of values ~0.1, hence atol 1e-7 (~2^-23 x 1).
  auto ref_state = [&](const torch::Tensor& p, const char* key) {
    auto& s = static_cast<torch::optim::AdamWParamState&>(*reference.state().at(p.unsafeGetTensorImpl()));
    return std::string(key) == "m" ? s.exp_avg() : s.exp_avg_sq();
  };
  const auto m = flat.exp_avg(), v = flat.exp_avg_sq();
  CATCH_CHECK(torch::allclose(m.narrow(0, 0, w.numel()), ref_state(w_ref, "m").flatten(), 1e-5, 1e-7));
  CATCH_CHECK(
      torch::allclose(v.narrow(0, w.numel(), b.numel()), ref_state(b_ref, "v").flatten(), 1e-5, 1e-12));
}

CATCH_TEST_CASE(
    "bf16 parameters: an fp32 master updated exactly as fp32 FlatAdamW, and weights its bf16 rounding") {
  for (int zero : {0, 1, 2}) {
    CATCH_INFO("zero " << zero);
    torch::manual_seed(12);
    // Enough elements for several 64K-element chunks of the fused pass, a decay split inside one.
    const auto w0 = torch::randn({300, 513}), b0 = torch::randn({70001});
    auto w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
    auto w32 = w0.clone().requires_grad_(), b32 = b0.clone().requires_grad_();
    tessera::parallel::DataParallelOptions bf16_options{zero, 25};
    bf16_options.param_dtype = torch::kBFloat16;
    auto reducer = tessera::parallel::GradReducer::Create({{"w", w, true}, {"b", b, false}}, LocalGrid().dp(),
                                                          bf16_options);
    CATCH_REQUIRE(reducer.ok());
    auto reducer32 = Reducer({{"w", w32, true}, {"b", b32, false}}, zero);
    // The parameters became bf16 with fp32 gradients; the master holds the exact fp32 start.
    CATCH_CHECK(w.scalar_type() == torch::kBFloat16);
    CATCH_CHECK((zero == 2 || w.grad().scalar_type() == torch::kFloat));
    const tessera::parallel::OwnedRange& range = (*reducer)->owned().front();
    CATCH_REQUIRE(range.master.defined());
    CATCH_CHECK(torch::equal(range.master, reducer32->owned().front().params));
    CATCH_CHECK((*reducer)->MasterBytes() == reducer32->ParamBytes());
    CATCH_CHECK((*reducer)->ParamBytes() * 2 == reducer32->ParamBytes());
    tessera::FlatAdamW flat((*reducer)->owned(), {0.9, 0.95, 1e-8, 0.1});
    tessera::FlatAdamW flat32(reducer32->owned(), {0.9, 0.95, 1e-8, 0.1});
    for (int step = 0; step < 3; ++step) {
      const auto cw = torch::randn({300, 513}), cb = torch::randn({70001});
      (*reducer)->ZeroGrad();
      reducer32->ZeroGrad();
      (*reducer)->MarkFinalBackward();
      reducer32->MarkFinalBackward();
      // The same fp32 gradients on both sides (the product with a constant: exact), the bf16 side
      // through Fp32Weight as the model takes its norm weights.
      using tessera::kernels::Fp32Weight;
      ((Fp32Weight(w) * cw).sum() + (Fp32Weight(b) * cb).sum()).backward();
      ((w32 * cw).sum() + (b32 * cb).sum()).backward();
      CATCH_REQUIRE((*reducer)->FinishBackward(nullptr).ok());
      CATCH_REQUIRE(reducer32->FinishBackward(nullptr).ok());
      flat.Step(1e-3 * (step + 1), 0.5);
      flat32.Step(1e-3 * (step + 1), 0.5);
      CATCH_REQUIRE((*reducer)->GatherParams().ok());
      CATCH_REQUIRE(reducer32->GatherParams().ok());
      // Bit for bit: the same fused arithmetic on the same fp32 values.
      CATCH_CHECK(torch::equal((*reducer)->owned().front().master, reducer32->owned().front().params));
      // The weights are the master rounded as LibTorch rounds fp32 to bf16.
      CATCH_CHECK(torch::equal(w, w32.detach().to(torch::kBFloat16)));
      CATCH_CHECK(torch::equal(b, b32.detach().to(torch::kBFloat16)));
    }
  }
}

namespace {

// The largest |a - b| over the elements, in units in the last place of max(|b|, floor): the
// floor is the scale of the terms that formed b, which set its rounding error where b cancelled
// to near 0.
double UlpDistance(const torch::Tensor& a, const torch::Tensor& b, double floor) {
  const auto magnitude = b.abs().clamp_min(floor);
  const auto ulp = torch::nextafter(magnitude, torch::full_like(magnitude, INFINITY)) - magnitude;
  return ((a - b).abs() / ulp).max().item<double>();
}

}  // namespace

CATCH_TEST_CASE(
    "StepOnDevice (LibTorch's fused AdamW, scalars in tensors) equals the CPU loop within a few ulp") {
  // Run on the CPU here: `_fused_adamw_` has a CPU kernel, so the code path that GPUs take (step
  // count, learning rate, clipping factor and skip flag read from tensors, the bf16 copy from the
  // master) is tested on every machine.
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    CATCH_INFO("parameters " << c10::toString(dtype));
    torch::manual_seed(13);
    const auto w0 = torch::randn({300, 513}), b0 = torch::randn({70001});
    auto w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
    auto w2 = w0.clone().requires_grad_(), b2 = b0.clone().requires_grad_();
    tessera::parallel::DataParallelOptions options{0, 25};
    options.param_dtype = dtype;
    auto loop_reducer =
        tessera::parallel::GradReducer::Create({{"w", w, true}, {"b", b, false}}, LocalGrid().dp(), options);
    auto device_reducer = tessera::parallel::GradReducer::Create({{"w", w2, true}, {"b", b2, false}},
                                                                 LocalGrid().dp(), options);
    CATCH_REQUIRE(loop_reducer.ok());
    CATCH_REQUIRE(device_reducer.ok());
    tessera::FlatAdamW loop((*loop_reducer)->owned(), {0.9, 0.95, 1e-8, 0.1});
    tessera::FlatAdamW device((*device_reducer)->owned(), {0.9, 0.95, 1e-8, 0.1});
    const auto scalar = [](double v) { return torch::full({}, v, torch::kFloat); };
    for (int step = 0; step < 5; ++step) {
      const auto cw = torch::randn({300, 513}), cb = torch::randn({70001});
      for (auto* r : {&*loop_reducer, &*device_reducer}) {
        (*r)->ZeroGrad();
        (*r)->MarkFinalBackward();
      }
      using tessera::kernels::Fp32Weight;
      ((Fp32Weight(w) * cw).sum() + (Fp32Weight(b) * cb).sum()).backward();
      ((Fp32Weight(w2) * cw).sum() + (Fp32Weight(b2) * cb).sum()).backward();
      CATCH_REQUIRE((*loop_reducer)->FinishBackward(nullptr).ok());
      CATCH_REQUIRE((*device_reducer)->FinishBackward(nullptr).ok());
      const double lr = 1e-3 * (step + 1), clip = step == 1 ? 0.37 : 1.0;
      const bool skip = step == 2;  // a skipped step changes nothing, the step count included
      const torch::Tensor master_before = (dtype == torch::kFloat ? (*device_reducer)->owned().front().params
                                                                  : (*device_reducer)->owned().front().master)
                                              .clone();
      const torch::Tensor m_before = device.exp_avg().clone();
      if (!skip) loop.Step(lr, clip);
      device.StepOnDevice(scalar(lr), scalar(clip), scalar(skip ? 1.0 : 0.0));
      CATCH_CHECK(device.step_count() == loop.step_count());
      const auto& lo = (*loop_reducer)->owned().front();
      const auto& de = (*device_reducer)->owned().front();
      const torch::Tensor lp = dtype == torch::kFloat ? lo.params : lo.master;
      const torch::Tensor dp = dtype == torch::kFloat ? de.params : de.master;
      if (skip) {
        CATCH_CHECK(torch::equal(dp, master_before));
        CATCH_CHECK(torch::equal(device.exp_avg(), m_before));
      }
      // The kernels differ in how they form each term (a division by the reciprocal clipping
      // factor instead of a product, b1 m + (1 - b1) g instead of a lerp, the decay as
      // p - lr wd p, the step size in fp32). Measured: parameters within 1 ulp of max(|p|, 1)
      // (randn weights: the update's terms are of that size), m within 6 ulp of max(|m|, 0.1)
      // ((1 - b1) g with g ~ 1), v within 5 ulp of max(|v|, 0.05); bounds: 2, 8 and 8.
      CATCH_CHECK(UlpDistance(dp, lp, 1.0) <= 2);
      CATCH_CHECK(UlpDistance(device.exp_avg(), loop.exp_avg(), 0.1) <= 8);
      CATCH_CHECK(UlpDistance(device.exp_avg_sq(), loop.exp_avg_sq(), 0.05) <= 8);
      if (dtype == torch::kBFloat16) CATCH_CHECK(torch::equal(de.params, de.master.to(torch::kBFloat16)));
    }
    const double max_diff = ((dtype == torch::kFloat ? (*device_reducer)->owned().front().params
                                                     : (*device_reducer)->owned().front().master) -
                             (dtype == torch::kFloat ? (*loop_reducer)->owned().front().params
                                                     : (*loop_reducer)->owned().front().master))
                                .abs()
                                .max()
                                .item<double>();
    CATCH_INFO("largest parameter difference after 4 updates: " << max_diff);
    CATCH_CHECK(max_diff > 0);  // two different kernels: a test that saw no difference compared nothing
  }
}
