// AdamW over the flat parameter and gradient buffers that the data-parallel reducer lays out
// (parallel/data_parallel/grad_reducer.h). It updates exactly the ranges this rank owns: every
// bucket under parallel.zero 0, this rank's shard of every bucket under ZeRO 1 and 2, so its two
// moments take 8 bytes per owned element, i.e. 1/DP of the model's under ZeRO. Each range is a
// single fused pass over its elements on CPU (kernels/cpu_loops.h); on other devices LibTorch's
// fused AdamW kernel (`_fused_adamw_`), which reads the learning rate, the clipping factor, the
// skip flag and the step count from device tensors, so the update never waits for the host. Where the
// parameters are bf16 (train.precision bf16) each range carries an fp32 master (grad_reducer.h): the update
// runs on the master and writes the rounded bf16 weights in the same pass.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "parallel/data_parallel/grad_reducer.h"

namespace tessera {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class FlatAdamW {
 public:
  FlatAdamW(std::vector<parallel::OwnedRange> ranges, AdamWOptions options);

  // One AdamW update at `lr` with the gradients scaled by `grad_scale` (clipping); the gradient
  // buffers themselves are left as they are. On a non-CPU device this is StepOnDevice.
  void Step(double lr, double grad_scale);
  // The same update with its inputs in 0-dim fp32 tensors on the ranges' device: the learning
  // rate, the clipping factor, and `skip` (1: leave parameters, moments and the step count as
  // they are, 0: update). Runs LibTorch's fused AdamW over each range (on the fp32 master, then
  // one copy into the bf16 weights) with the step count kept on the device: nothing here reads
  // a value back to the host. Equal to Step's CPU loop within a few ulp (flat_adamw_test.cc).
  void StepOnDevice(const torch::Tensor& lr, const torch::Tensor& grad_scale, const torch::Tensor& skip);
  // The training loop's update, with the clipping factor and the skip flag (1: no update) in
  // fp64 tensors of one element on the ranges' device and the host's learning rate. On the CPU
  // it reads them (host memory: nothing to wait for) and runs Step's loop, bit for bit Step's
  // result; elsewhere it is StepOnDevice, which reads nothing back.
  void StepDeferred(double lr, const torch::Tensor& grad_scale, const torch::Tensor& skip);

  // Elements this rank updates, and how many of them are decayed.
  int64_t numel() const { return numel_; }
  int64_t decayed_numel() const { return decayed_numel_; }
  // Updates taken (reads the device's count back when StepOnDevice ran: a host sync).
  int64_t step_count() const;
  void set_step_count(int64_t step);
  // Bytes of optimizer state (two fp32 moments) held by this process.
  int64_t StateBytes() const { return 2 * numel_ * static_cast<int64_t>(sizeof(float)); }
  // The moments, one flat buffer each, ranges back to back (checkpoints read them).
  const torch::Tensor& exp_avg() const { return exp_avg_; }
  const torch::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  // The moments of each owned range (views, in the order of the ranges given at construction).
  std::vector<torch::Tensor> ExpAvgByRange() const;
  std::vector<torch::Tensor> ExpAvgSqByRange() const;

 private:
  struct Range {
    parallel::OwnedRange owned;
    torch::Tensor exp_avg, exp_avg_sq;  // views of the flat moments
  };
  void StepRangeFused(Range& r, double lr, double grad_scale, double bias1, double bias2);
  void StepRangeOnDevice(Range& r, const torch::Tensor& lr, const torch::Tensor& inverse_scale,
                         const torch::Tensor& skip);

  AdamWOptions options_;
  std::vector<Range> ranges_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  int64_t numel_ = 0, decayed_numel_ = 0;
  int64_t step_ = 0;
  // StepOnDevice's count of updates taken: a 0-dim fp32 tensor on the ranges' device (as
  // `_fused_adamw_` reads it; exact up to 2^24 steps), created from step_ on first use.
  torch::Tensor device_step_;
};

}  // namespace tessera
