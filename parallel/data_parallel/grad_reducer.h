// Data-parallel gradient reduction in buckets, overlapped with backward, and the sharding of the
// optimizer's work over the data-parallel (DP) group (ZeRO-1/2).
//
// At construction the parameters move into one flat fp32 buffer laid out bucket by bucket, in
// the reverse of the order the caller lists them (the caller lists them in order of use in the
// forward pass, so the first buckets are the first whose gradients backward completes). Each
// bucket is padded to a multiple of the DP size and is split into DP equal, contiguous shards;
// DP rank r owns shard r of every bucket. A hook on each parameter's gradient accumulator
// counts the gradients a bucket still waits for; the moment the last one lands, the bucket's
// reduction is issued asynchronously, so on NCCL it overlaps the rest of backward:
//
//   zero 0  all-reduce (average) of the bucket; every rank keeps and updates everything
//   zero 1  reduce-scatter (average) into this rank's shard; AdamW moments exist for the shard
//           only; after the update the shards are all-gathered back into every rank's weights
//   zero 2  as 1, and the full gradients do not outlive the step: each bucket's gradients are
//           copied out, reduce-scattered into the persistent shard, and freed.
//
// The non-final micro-steps of gradient accumulation reduce nothing: the caller marks, per
// group of parameters (a pipeline rank's model chunk; one group without pipelining), when the
// backward that brings the group's last gradients of the step begins (MarkFinalBackward); only
// gradients arriving after that count towards a bucket's completion.
//
// Parameters marked `late` (their gradients need a fix-up across another group first: sequence-
// parallel norm weights and replicated key/value shards under tensor parallelism, the second
// copy of tied embeddings on the last pipeline stage) live in one last bucket that is reduced in
// FinishBackward, after the caller's fix-up ran.
//
// The global gradient norm counts every logical parameter element once: each rank sums the
// squares of its DP shard of every bucket, weighted by the parameter's norm_weight (1/TP for a
// tensor replicated over TP, 0 for a tied copy), and the sums are all-reduced over the group
// the caller names (the world).
//
// All ranks of the DP group must construct the reducer with the same bucket layout (the same
// parameter shapes in the same order) and drive it through the same calls in the same order.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/comm/communicator.h"

namespace torch::autograd {
struct Node;
}

namespace tessera::parallel {

struct DataParallelParameter {
  std::string name;
  at::Tensor tensor;         // a leaf fp32 parameter; its storage moves into the flat buffer
  bool decay = true;         // receives weight decay (the optimizer reads this)
  double norm_weight = 1.0;  // share of each element in the global gradient norm
  bool late = false;         // reduced only in FinishBackward, after the caller's fix-up
  int group = 0;             // MarkFinalBackward's unit (the model chunk that owns it)
};

struct DataParallelOptions {
  int zero = 0;           // 0, 1 or 2
  double bucket_mb = 25;  // MiB of fp32 gradients per bucket
};

// A contiguous run of the flat buffers whose update this rank performs.
struct OwnedRange {
  at::Tensor params;        // 1-D view of the flat parameters
  at::Tensor grads;         // 1-D view of the reduced gradients for those parameters
  int64_t decayed = 0;      // the first `decayed` elements receive weight decay
  int64_t flat_offset = 0;  // where `params` starts in the flat parameter buffer
};

// When one bucket's reduction was issued, relative to the start of backward (for the overlap
// trace: on a real overlap, all but the late bucket are issued before backward ends).
struct BucketEvent {
  int bucket = 0;
  int64_t bytes = 0;
  double issued_ms = 0;
};

class GradReducer {
 public:
  // `dp` is the data-parallel group. Collective over dp only in later calls; construction does
  // not communicate.
  static absl::StatusOr<std::unique_ptr<GradReducer>> Create(std::vector<DataParallelParameter> params,
                                                             Communicator& dp, DataParallelOptions options);
  ~GradReducer();

  // Before the first micro-step of an optimizer step: clears gradients and shards.
  void ZeroGrad();
  // Before the backward that produces `group`'s last gradients of this step (the last micro-
  // batch's): from now on the group's gradients are final, and a bucket whose gradients are all
  // final is reduced at once.
  void MarkFinalBackward(int group = 0);
  // After the last backward of the step: runs `late_fixup` (may be empty), reduces the late
  // bucket and any bucket whose hooks did not fire (a parameter unused this step), and waits for
  // every reduction. Collective over dp.
  absl::Status FinishBackward(const std::function<absl::Status()>& late_fixup);

  // The L2 norm of the reduced gradient of the whole model: this rank's weighted sum of squares,
  // all-reduced over `norm_group` (the world: DP shards, TP shards and pipeline stages are
  // disjoint). Collective over norm_group.
  absl::StatusOr<double> GlobalGradNorm(Communicator& norm_group);
  // The ranges this rank's optimizer updates: every bucket whole under zero 0, this rank's shard
  // of every bucket under zero 1 and 2.
  const std::vector<OwnedRange>& owned() const { return owned_; }
  // Under zero >= 1: all-gathers the updated shards into every rank's weights. Collective over dp.
  absl::Status GatherParams();

  // Where parameter `index` (in Create's order) starts in the flat buffer.
  int64_t flat_offset(int index) const { return param_offset_[index]; }
  // Assembles a per-element quantity the optimizer keeps for its owned ranges (AdamW moments:
  // one tensor per owned range, in owned() order) into a tensor over the whole flat buffer, so
  // that every parameter's part can be read at flat_offset. Under ZeRO the shards are
  // all-gathered over DP (collective over dp); under zero 0 it is a concatenation.
  absl::StatusOr<at::Tensor> GatherFlat(const std::vector<at::Tensor>& owned_values);

  int zero() const { return options_.zero; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Elements of the flat parameter buffer (with padding).
  int64_t flat_numel() const { return flat_params_.numel(); }
  // Bytes of gradients that stay allocated between steps on this rank (the full flat buffer
  // under zero 0; plus the shard under 1; only the shard under 2).
  int64_t PersistentGradBytes() const;
  // The issue times of the last step's bucket reductions, and backward's duration (ms).
  const std::vector<BucketEvent>& last_events() const { return events_; }
  double last_backward_ms() const { return backward_ms_; }

  // Internal: called by the accumulator hook of parameter `index`.
  void OnGradReady(int index);

 private:
  struct Bucket;
  struct Pending;
  GradReducer(Communicator& dp, DataParallelOptions options);
  // Steps of Create. LayOutBuckets returns the sizes of the flat buffer and of this rank's shards.
  std::pair<int64_t, int64_t> LayOutBuckets(std::vector<std::vector<int>>& groups, size_t late_group);
  void FlattenParameters(int64_t total, int64_t shard_total, const at::TensorOptions& float_options);
  void AssignOwnedRanges();
  void InstallHooks();
  absl::Status Launch(int bucket);

  Communicator& dp_;
  DataParallelOptions options_;
  std::vector<DataParallelParameter> params_;
  std::vector<int> param_bucket_;
  std::vector<char> counted_;          // parameter's final gradient arrived this step
  std::vector<char> group_final_;      // indexed by group
  std::vector<int64_t> param_offset_;  // in the flat buffer
  std::vector<std::unique_ptr<Bucket>> buckets_;
  at::Tensor flat_params_;
  at::Tensor flat_grads_;   // zero 0/1: the gradients (parameters' .grad are views into it)
  at::Tensor shard_grads_;  // zero 1/2: this rank's shards of every bucket, back to back
  std::vector<OwnedRange> owned_;
  absl::Status launch_error_;
  std::vector<BucketEvent> events_;
  std::chrono::steady_clock::time_point backward_start_;
  bool backward_started_ = false;
  double backward_ms_ = 0;
  std::vector<std::unique_ptr<Pending>> in_flight_;  // in launch order
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators_;
};

}  // namespace tessera::parallel
