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

}  // namespace tessera::parallel
