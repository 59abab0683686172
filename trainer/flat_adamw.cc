// AdamW as in Loshchilov & Hutter / torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, then
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). On CPU one fused pass per range
// (kernels/cpu_loops.h AdamWElements); elsewhere LibTorch's fused AdamW kernel with its scalars
// in device tensors. With bf16 parameters p is the range's fp32 master, and the bf16 weights are
// written from it (in the same pass on CPU).
#include "trainer/flat_adamw.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/host_sync.h"
#include "kernels/cpu_loops.h"

namespace tessera {

FlatAdamW::FlatAdamW(std::vector<parallel::OwnedRange> ranges, AdamWOptions options) : options_(options) {
  for (const parallel::OwnedRange& r : ranges) {
    const torch::Tensor& updated = r.master.defined() ? r.master : r.params;
    TORCH_CHECK(updated.scalar_type() == torch::kFloat && r.grads.scalar_type() == torch::kFloat,
                "optimizer ranges must be fp32 (or carry an fp32 master)");
    TORCH_CHECK(!r.master.defined() || r.params.scalar_type() == torch::kBFloat16,
                "an fp32 master goes with bf16 parameters, found ", r.params.scalar_type());
    numel_ += r.params.numel();
    decayed_numel_ += r.decayed;
  }
  auto opts = ranges.empty() ? torch::TensorOptions().dtype(torch::kFloat) : ranges.front().grads.options();
  exp_avg_ = torch::zeros({numel_}, opts);
  exp_avg_sq_ = torch::zeros({numel_}, opts);
  int64_t offset = 0;
  for (parallel::OwnedRange& r : ranges) {
    const int64_t n = r.params.numel();
    ranges_.push_back({r, exp_avg_.narrow(0, offset, n), exp_avg_sq_.narrow(0, offset, n)});
    offset += n;
  }
}

std::vector<torch::Tensor> FlatAdamW::ExpAvgByRange() const {
  std::vector<torch::Tensor> out;
  for (const Range& r : ranges_) out.push_back(r.exp_avg);
  return out;
}

std::vector<torch::Tensor> FlatAdamW::ExpAvgSqByRange() const {
  std::vector<torch::Tensor> out;
  for (const Range& r : ranges_) out.push_back(r.exp_avg_sq);
  return out;
}

int64_t FlatAdamW::step_count() const {
  if (!device_step_.defined()) return step_;
  return static_cast<int64_t>(HostRead<float>(device_step_));
}

void FlatAdamW::set_step_count(int64_t step) {
  step_ = step;
  if (device_step_.defined()) device_step_.fill_(static_cast<double>(step));
}

void FlatAdamW::Step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  if (!ranges_.empty() && !ranges_.front().owned.grads.is_cpu()) {
    const auto options = ranges_.front().owned.grads.options().dtype(torch::kFloat);
    StepOnDevice(torch::full({}, lr, options), torch::full({}, grad_scale, options),
                 torch::zeros({}, options));
    return;
  }
  ++step_;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  for (Range& r : ranges_) {
    if (r.owned.params.numel() > 0) StepRangeFused(r, lr, grad_scale, bias1, bias2);
  }
}

void FlatAdamW::StepDeferred(double lr, const torch::Tensor& grad_scale, const torch::Tensor& skip) {
  if (skip.is_cpu()) {
    if (CpuValue<double>(skip) != 0) return;
    Step(lr, CpuValue<double>(grad_scale));
    return;
  }
  if (ranges_.empty()) {
    // Nothing to update, but the count of updates taken must match the other ranks'.
    if (HostRead<double>(skip) == 0) ++step_;
    return;
  }
  const auto options = ranges_.front().owned.grads.options().dtype(torch::kFloat);
  StepOnDevice(torch::full({}, lr, options), grad_scale.to(torch::kFloat).reshape({}),
               skip.to(torch::kFloat).reshape({}));
}

void FlatAdamW::StepOnDevice(const torch::Tensor& lr, const torch::Tensor& grad_scale,
                             const torch::Tensor& skip) {
  torch::NoGradGuard no_grad;
  if (ranges_.empty()) return;
  if (!device_step_.defined()) {
    device_step_ = torch::full({}, static_cast<double>(step_), ranges_.front().owned.grads.options());
  }
  // `_fused_adamw_` reads the step count as already advanced, divides the gradients by its
  // grad_scale (AMP's convention: clipping multiplies, so pass the reciprocal) and returns at
  // once when found_inf is 1; a skipped step then takes its count back.
  device_step_.add_(1.0);
  const torch::Tensor inverse_scale = grad_scale.reciprocal();
  for (Range& r : ranges_) {
    if (r.owned.params.numel() > 0) StepRangeOnDevice(r, lr, inverse_scale, skip);
  }
  device_step_.sub_(skip);
}

void FlatAdamW::StepRangeFused(Range& r, double lr, double grad_scale, double bias1, double bias2) {
  const bool has_master = r.owned.master.defined();
  float* params = (has_master ? r.owned.master : r.owned.params).data_ptr<float>();
  // bf16 weights as raw bit patterns: cpu_loops.cc does not see LibTorch's types.
  uint16_t* params_bf16 =
      has_master ? reinterpret_cast<uint16_t*>(r.owned.params.data_ptr<at::BFloat16>()) : nullptr;
  const float* grads = r.owned.grads.data_ptr<float>();
  float* exp_avg = r.exp_avg.data_ptr<float>();
  float* exp_avg_sq = r.exp_avg_sq.data_ptr<float>();
  kernels::cpu::AdamWScalars s{static_cast<float>(grad_scale),           1.0f,
                               static_cast<float>(1.0 - options_.beta1), static_cast<float>(options_.beta2),
                               static_cast<float>(1.0 - options_.beta2), static_cast<float>(std::sqrt(bias2)),
                               static_cast<float>(options_.eps),         static_cast<float>(-lr / bias1)};
  kernels::cpu::AdamWScalars decayed = s;
  decayed.decay = static_cast<float>(1.0 - lr * options_.weight_decay);
  const int64_t split = r.owned.decayed;  // elements [0, split) are decayed
  // Memory-bound: chunks of 64K elements (768 KiB of state) keep every core streaming.
  at::parallel_for(0, r.owned.params.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    auto update = [&](int64_t from, int64_t to, const kernels::cpu::AdamWScalars& scalars) {
      if (has_master) {
        kernels::cpu::AdamWElementsBf16(params, params_bf16, grads, exp_avg, exp_avg_sq, from, to, scalars);
      } else {
        kernels::cpu::AdamWElements(params, grads, exp_avg, exp_avg_sq, from, to, scalars);
      }
    };
    if (begin < split) update(begin, std::min(end, split), decayed);
    if (end > split) update(std::max(begin, split), end, s);
  });
}

void FlatAdamW::StepRangeOnDevice(Range& r, const torch::Tensor& lr, const torch::Tensor& inverse_scale,
                                  const torch::Tensor& skip) {
  torch::Tensor& params = r.owned.master.defined() ? r.owned.master : r.owned.params;
  const int64_t n = params.numel(), split = r.owned.decayed;  // elements [0, split) are decayed
  auto update = [&](int64_t from, int64_t to, double weight_decay) {
    if (to <= from) return;
    at::_fused_adamw_({params.narrow(0, from, to - from)}, {r.owned.grads.narrow(0, from, to - from)},
                      {r.exp_avg.narrow(0, from, to - from)}, {r.exp_avg_sq.narrow(0, from, to - from)}, {},
                      {device_step_}, lr, options_.beta1, options_.beta2, weight_decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false, inverse_scale, skip);
  };
  update(0, split, options_.weight_decay);
  update(split, n, 0.0);
  if (r.owned.master.defined()) r.owned.params.copy_(params);  // the bf16 weights, rounded once
}

}  // namespace tessera
