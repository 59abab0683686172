// The conjugate communication functions of tensor and sequence parallelism (Megatron-LM's
// "mappings"), as LibTorch autograd functions. Each pairs a forward communication with the
// backward one that makes the gradient of the split computation equal the unsplit gradient:
//
//   function                  forward                        backward
//   CopyToTensorParallel      identity                       all-reduce (sum)
//   ReduceFromTensorParallel  all-reduce (sum)               identity
//   ScatterToLastDim          keep this rank's last-dim block all-gather along the last dim
//   GatherFromLastDim         all-gather along the last dim  keep this rank's last-dim block
//   ScatterToSequence         keep this rank's seq block     all-gather along seq
//   GatherFromSequence        all-gather along seq           reduce-scatter along seq (sum)
//   ReduceScatterToSequence   reduce-scatter along seq (sum) all-gather along seq
//
// Activations are [batch, seq, ...] (Tessera's layout). Under sequence parallelism rank r of a
// group of n holds the contiguous sequence block [r*s/n, (r+1)*s/n) of every sequence:
// [batch, s/n, ...]. The collectives exchange rank-major buffers, so a gather along seq receives
// [n, batch, s/n, ...] and makes it [batch, s, ...] with one permuting copy (none when batch is
// 1), and a reduce-scatter permutes [batch, s, ...] into [n, batch, s/n, ...] first. Keeping the
// model in [batch, seq, ...] costs that one copy per collective and leaves every other
// operation (attention, rotary, norms) unchanged.
//
// All ranks of the group must call these functions in the same order, in forward and (as
// autograd replays them in reverse) in backward, with tensors of the same dtype and shape. Each
// is the identity when `group` is nullptr or has one rank. A failed collective throws
// c10::Error (exceptions are allowed inside autograd code; the trainer converts them to a
// Status at its boundary).
#pragma once

#include <torch/types.h>

#include <memory>
#include <utility>

#include "parallel/comm/communicator.h"

namespace tessera::parallel {

// The group's size; 1 for nullptr (a group of one).
int GroupSize(const Communicator* group);
// This rank's index in the group; 0 for nullptr.
int GroupRank(const Communicator* group);

// Forward: identity. Backward: all-reduce (sum) of the gradient over the group. Placed where a
// replicated activation enters computations that are split over the group (the input of a
// column-parallel layer), so the partial input gradients are summed.
torch::Tensor CopyToTensorParallel(const torch::Tensor& x, Communicator* group);

// Forward: all-reduce (sum) over the group. Backward: identity. Sums partial results (the
// output of a row-parallel layer); the gradient is already replicated.
torch::Tensor ReduceFromTensorParallel(const torch::Tensor& x, Communicator* group);

// Forward: this rank's block of the last dimension (size divisible by the group's size), no
// communication. Backward: all-gather of the gradient blocks along the last dimension.
torch::Tensor ScatterToLastDim(const torch::Tensor& x, Communicator* group);

// Forward: all-gather of every rank's block along the last dimension (blocks in rank order).
// Backward: this rank's block of the gradient, no communication.
torch::Tensor GatherFromLastDim(const torch::Tensor& x, Communicator* group);

// x: [batch, s, ...] with s divisible by the group's size. Forward: this rank's sequence block
// [batch, s/n, ...], no communication. Backward: all-gather of the gradient along seq.
torch::Tensor ScatterToSequence(const torch::Tensor& x, Communicator* group);

// x: [batch, s/n, ...], this rank's sequence block. Forward: all-gather along seq into
// [batch, s, ...]. Backward: reduce-scatter (sum) of the gradient along seq: the gathered
// activation feeds computations split over the group, whose gradients are partial sums.
torch::Tensor GatherFromSequence(const torch::Tensor& x, Communicator* group);

// x: [batch, s, ...], a partial sum on every rank (the output of a row-parallel layer). Forward:
// reduce-scatter (sum) along seq into this rank's block [batch, s/n, ...]. Backward: all-gather
// of the gradient along seq.
torch::Tensor ReduceScatterToSequence(const torch::Tensor& x, Communicator* group);

// The collectives underneath, without autograd, for functions that run their own backward (the
// sequence-parallel column layer re-gathers its input in backward): the all-gather of every
// rank's sequence block into [batch, s, ...], and the reduce-scatter (sum) of [batch, s, ...]
// into this rank's block. Throw c10::Error on a failed collective.
torch::Tensor AllGatherSequence(const torch::Tensor& x, Communicator& group);
torch::Tensor ReduceScatterSequence(const torch::Tensor& x, Communicator& group);

// A collective started without waiting for it; Wait() completes it and gives its result. Work
// that does not read the result may run in between: the column-parallel layers form their
// weight gradients while their input gradient's collective is in flight (layers.h). On NCCL the
// collective runs on the communicator's stream meanwhile; on MPI it may progress only inside
// Wait(). Destroyed without Wait() (an exception in between), it waits (MPI) or stays ordered
// on the communicator's stream (NCCL), so no buffer is released under the backend.
class PendingCollective {
 public:
  // Nothing in flight (a group of one): Wait() returns `result`.
  explicit PendingCollective(torch::Tensor result) : result_(std::move(result)) {}
  PendingCollective(torch::Tensor result, std::unique_ptr<Work> work, Communicator* group, const char* op)
      : result_(std::move(result)), work_(std::move(work)), group_(group), op_(op) {}
  PendingCollective(PendingCollective&&) = default;
  PendingCollective& operator=(PendingCollective&&) = default;

  // The result, once the collective completed; a second call returns it again. Throws
  // c10::Error when the collective failed.
  torch::Tensor Wait();

 private:
  torch::Tensor result_;
  std::unique_ptr<Work> work_;  // null once waited, or when nothing was started
  Communicator* group_ = nullptr;
  const char* op_ = "";
};

// The asynchronous forms: the sum of x over the group into a fresh tensor (x alone for a group
// of one or nullptr), and ReduceScatterSequence. The same arithmetic as the blocking forms,
// which are these followed by Wait().
PendingCollective AllReduceSumAsync(const torch::Tensor& x, Communicator* group);
PendingCollective ReduceScatterSequenceAsync(const torch::Tensor& x, Communicator& group);

}  // namespace tessera::parallel
