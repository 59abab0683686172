// Data-parallel gradient reduction in buckets, overlapped with backward, and the sharding of the
// optimizer's work over the data-parallel (DP) group (ZeRO-1/2).
//
// At construction the parameters move into one flat buffer laid out bucket by bucket, in
// the reverse of the order the caller lists them (the caller lists them in order of use in the
// forward pass, so the first buckets are the first whose gradients backward completes). Each
// bucket is padded to a multiple of the DP size and is split into DP equal, contiguous shards;
// DP rank r owns shard r of every bucket (the arithmetic: bucket_layout.h). A hook on each parameter's
// gradient accumulator counts the gradients a bucket still waits for; the moment the last one lands, the
// bucket's reduction is issued asynchronously, so on NCCL it overlaps the rest of backward:
//
//   zero 0  all-reduce (average) of the bucket; every rank keeps and updates everything
//   zero 1  reduce-scatter (average) into this rank's shard; AdamW moments exist for the shard
//           only; after the update the shards are all-gathered back into every rank's weights:
//           started at the end of the step (StartGatherParams) and awaited per unit by the next
//           forward (UnitGatherer::Gather), so the gathers of later layers overlap the compute of
//           earlier ones; anything else that reads the weights waits for all of it first
//           (WaitParams). Under bf16 the gather moves the bf16 weights (half the bytes).
//   zero 2  as 1, and the full gradients do not outlive the step: each bucket's gradients are
//           copied out, reduce-scattered into the persistent shard, and freed.
//   zero 3  as 2, and the parameters too are sharded between uses (FSDP): buckets never span two
//           units (DataParallelParameter::unit: the embedding, a block, the final norm + head);
//           each bucket has its own padded storage, which the parameters are views of, and this
//           rank keeps only its shard of it (the owned ranges' `params`, in one shard buffer).
//           The model gathers a unit before its forward and before its backward (UnitGatherer,
//           on a communicator split off the DP group so that the gathers' order never mixes
//           with the reductions'); the unit is released after its forward, and after its
//           backward once every parameter's gradient accumulator ran. Release resizes the
//           storage to 0 bytes: tensors saved for backward stay valid views (no version bump)
//           and see the data again once re-gathered. The late bucket stays gathered.
//
// Under param_dtype bf16 the flat parameter buffer (and so every parameter) becomes bf16, the
// gradients stay fp32 (each parameter's .grad is an fp32 view of the flat gradient buffer while
// the parameter itself is bf16: kernels/weight_grad.h accumulates into it), and each owned range
// carries an fp32 master copy, taken from the fp32 values the parameters held at construction,
// so a bf16 run starts from exactly the fp32 run's initial weights. The optimizer updates the
// master and writes the rounded bf16 weights; per parameter that is 2 B of weights, 4 B of
// gradients, and 4 B of master + 8 B of moments over the owned share (all of it at zero 0, 1/DP
// under ZeRO), as in Megatron's distributed optimizer.
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
//
// Fault injection, for tests only: with TESSERA_FAULT_REDUCER_DROP_TAIL=K in the environment, the
// last K parameter elements of the first bucket keep this rank's own gradient instead of the
// reduced one (as if the reduction had skipped them), a deliberately planted bug that the
// reducer's unit test and the layout-parity suites must catch. A warning says when it is on.
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
#include "parallel/data_parallel/bucket_layout.h"
#include "parallel/data_parallel/unit_gatherer.h"

namespace torch::autograd {
struct Node;
}

namespace tessera::parallel {

struct DataParallelParameter {
  std::string name;
  at::Tensor tensor;            // a leaf fp32 parameter; its storage moves into the flat buffer
                                // (and its dtype becomes DataParallelOptions::param_dtype)
  bool decay = true;            // receives weight decay (the optimizer reads this)
  double norm_weight = 1.0;     // share of each element in the global gradient norm
  bool late = false;            // reduced only in FinishBackward, after the caller's fix-up
  int group = 0;                // MarkFinalBackward's unit (the model chunk that owns it)
  int unit = 0;                 // zero 3's gather unit, in forward order (ignored below zero 3)
  bool fuse_with_next = false;  // rows of one product with the next: adjacent in the buffer
};

struct DataParallelOptions {
  int zero = 0;           // 0, 1, 2 or 3
  double bucket_mb = 25;  // MiB of fp32 gradients per bucket
  // The dtype the parameters take once flattened: fp32, or bf16 (the model then computes with
  // bf16 weights; gradients stay fp32 and the owned ranges get an fp32 master copy).
  at::ScalarType param_dtype = at::kFloat;
  int prefetch = 1;  // zero 3: units gathered ahead of the one in use
};

// A contiguous run of the flat buffers whose update this rank performs.
struct OwnedRange {
  at::Tensor params;        // 1-D view of the flat parameters (the model's dtype)
  at::Tensor grads;         // 1-D view of the reduced gradients for those parameters (fp32)
  at::Tensor master;        // fp32 master of `params` when those are not fp32, else undefined
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

class GradReducer : public UnitGatherer {
 public:
  // `dp` is the data-parallel group. Collective over dp only in later calls; construction does
  // not communicate.
  static absl::StatusOr<std::unique_ptr<GradReducer>> Create(std::vector<DataParallelParameter> params,
                                                             Communicator& dp, DataParallelOptions options);
  ~GradReducer() override;

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
  // Zero 2: finishes the reductions that have completed (without waiting for any other) and
  // frees their buffers: each bucket's gathered gradients and its reduce-scatter's output. Called
  // before every launch, so at most the reductions still on the wire hold their copies; an error
  // of one surfaces from FinishBackward. A no-op at the other levels.
  void RetireCompleted();
  // Zero 2: bytes held by reductions not yet retired (gathered gradients + outputs), and their
  // peak over the run.
  int64_t PendingBytes() const { return pending_bytes_; }
  int64_t PeakPendingBytes() const { return peak_pending_bytes_; }

  // The L2 norm of the reduced gradient of the whole model: this rank's weighted sum of squares,
  // all-reduced over `norm_group` (the world: DP shards, TP shards and pipeline stages are
  // disjoint). Collective over norm_group. Reads the norm back (a host synchronisation).
  absl::StatusOr<double> GlobalGradNorm(Communicator& norm_group);
  // The same norm left on the device: a {1} fp64 tensor (NaN where a gradient is not finite).
  absl::StatusOr<at::Tensor> GlobalGradNormOnDevice(Communicator& norm_group);
  // The ranges this rank's optimizer updates: every bucket whole under zero 0, this rank's shard
  // of every bucket under zero 1 and 2.
  const std::vector<OwnedRange>& owned() const { return owned_; }
  // Under zero 1 and 2: starts the all-gathers of the updated shards into every rank's weights
  // (in the parameters' dtype: bf16 weights move as bf16), bucket by bucket in the order the
  // forward first uses them, and returns without waiting. The weights are then not to be read
  // until waited for: per unit by Gather(unit) (the model's forward does it), or all at once by
  // WaitParams. Under zero 3: frees every gathered unit (they are gathered again on use) and
  // re-gathers the late bucket, waiting for it. Collective over dp.
  absl::Status StartGatherParams();
  // Waits for every all-gather StartGatherParams started (a no-op when none is on its way).
  // Not collective: each rank waits for its own.
  absl::Status WaitParams();
  // StartGatherParams, then WaitParams.
  absl::Status GatherParams();
  // Whether an all-gather of updated weights is still on its way (zero 1, 2): the weights must
  // not be read (or written) until WaitParams.
  bool ParamsPending() const;
  // The bytes the last StartGatherParams all-gathered into this rank's weights (for
  // the logs and the tests).
  int64_t last_gather_bytes() const { return last_gather_bytes_; }

  // UnitGatherer. Zero 3: gathers and frees units. Zero 1, 2: Gather and HoldAll wait for the
  // all-gather of updated weights (Gather: the buckets holding the unit's parameters); the rest
  // do nothing. Zero 0: no-ops. Failures of a collective throw c10::Error: these run inside the
  // model's forward and backward.
  void Gather(int unit) override;
  void Prefetch(int unit) override;
  void Release(int unit) override;
  void ReleaseAll() override;
  void HoldAll() override;
  void EndHold() override;
  int prefetch() const override { return options_.prefetch; }
  bool releases_units() const override { return options_.zero == 3; }
  bool AllGathered() const override;
  // Zero 3: whether every bucket of `unit` is gathered; the bytes of gathered buckets now and at
  // their peak since the last ResetPeakGatheredBytes (the late bucket not counted; nor a hold:
  // HoldAll gathers everything by design, and the peak is that of the training steps).
  bool IsGathered(int unit) const;
  int64_t GatheredBytes() const { return gathered_bytes_; }
  int64_t PeakGatheredBytes() const { return peak_gathered_bytes_; }
  void ResetPeakGatheredBytes() { peak_gathered_bytes_ = gathered_bytes_; }
  // Zero 3: bucket_layout.h's GatheredUnitBound for this layout (`tied_head`: the head reads the
  // embedding's unit).
  int64_t GatheredUnitBound(bool tied_head) const;

  // Where parameter `index` (in Create's order) starts in the flat buffer.
  int64_t flat_offset(int index) const { return param_offset_[index]; }
  // Assembles a per-element quantity the optimizer keeps for its owned ranges (AdamW moments:
  // one tensor per owned range, in owned() order) into a tensor over the whole flat buffer, so
  // that every parameter's part can be read at flat_offset. Under ZeRO the shards are
  // all-gathered over DP (collective over dp); under zero 0 it is a concatenation.
  absl::StatusOr<at::Tensor> GatherFlat(const std::vector<at::Tensor>& owned_values);

  int zero() const { return options_.zero; }
  // Whether the owned ranges carry an fp32 master (the parameters are not fp32).
  bool has_master() const { return options_.param_dtype != at::kFloat; }
  at::ScalarType param_dtype() const { return options_.param_dtype; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Elements of the flat parameter buffer (with padding).
  int64_t flat_numel() const { return flat_total_; }
  at::Device device() const { return param_options_.device(); }
  // Bytes of gradients that stay allocated between steps on this rank (the full flat buffer
  // under zero 0; plus the shard under 1; only the shard under 2).
  int64_t PersistentGradBytes() const;
  // Bytes of the parameters kept between steps (the flat buffer, padding included; zero 3: the
  // shards and the late bucket) and of the fp32 master.
  int64_t ParamBytes() const;
  int64_t MasterBytes() const;
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
  std::pair<int64_t, int64_t> LayOutBuckets();
  // Returns the parameters' fp32 values, flat (the master's source under bf16).
  at::Tensor FlattenParameters(int64_t total, int64_t shard_total, const at::TensorOptions& float_options);
  void AssignOwnedRanges(const at::Tensor& flat_fp32);
  void InstallHooks();
  absl::Status Launch(int bucket);
  // Waits for a launched reduction (once), lands its result and frees its buffers.
  absl::Status Complete(Pending& pending);
  // Zero 3: the storage of bucket `b` grows back and its all-gather starts; waits for it; frees it.
  // FinishGather also completes zero 1 and 2's gathers of updated weights.
  absl::Status StartGather(Bucket& b);
  absl::Status FinishGather(Bucket& b);
  // Zero 1, 2: per unit, the buckets holding any of its parameters, and the order in which the
  // buckets' gathers are issued (by the first unit that uses them).
  void PlanWeightGathers();
  void ReleaseBucket(Bucket& b);
  // Zero 3: the buckets of `unit` (none for a unit this rank does not hold).
  const std::vector<int>& UnitBuckets(int unit) const;
  // The planted fault: before bucket 0's reduction is issued, saves its tail of `unreduced` (the
  // bucket's local gradients) to be copied over `reduced` (the result for the bucket's elements
  // [reduced_first, reduced_first + reduced.numel())) once it completes.
  void PlantFault(const Bucket& bucket, const at::Tensor& unreduced, const at::Tensor& reduced,
                  int64_t reduced_first, Pending& pending) const;

  Communicator& dp_;
  DataParallelOptions options_;
  std::vector<DataParallelParameter> params_;
  std::vector<int> param_bucket_;
  std::vector<char> counted_;          // parameter's final gradient arrived this step
  std::vector<char> group_final_;      // indexed by group
  std::vector<int64_t> param_offset_;  // in the flat buffer
  std::vector<std::unique_ptr<Bucket>> buckets_;
  FlatLayout layout_;        // the buckets' spans as laid out (for GatheredUnitBound)
  at::Tensor flat_params_;   // zero 0-2: every parameter, back to back (bucket by bucket)
  at::Tensor shard_params_;  // zero 3: this rank's shards of every bucket, back to back
  int64_t flat_total_ = 0;   // elements of the flat layout (padding included)
  at::TensorOptions param_options_;
  std::unique_ptr<Communicator> gather_comm_;   // zero 3: the parameters' all-gathers
  std::vector<std::vector<int>> unit_buckets_;  // zero 3: per unit, its buckets
  std::vector<int> unit_params_;                // zero 3: per unit, its parameters (not late)
  std::vector<int> unit_fired_;                 // zero 3: accumulators run since the last release
  std::vector<std::vector<int>> unit_waits_;    // zero 1, 2: per unit, the buckets it waits for
  std::vector<int> gather_order_;               // zero 1, 2: buckets by the first unit using them
  int64_t last_gather_bytes_ = 0;
  int64_t gathered_bytes_ = 0, peak_gathered_bytes_ = 0;
  int64_t pending_bytes_ = 0, peak_pending_bytes_ = 0;  // zero 2's reductions in flight
  bool held_ = false;
  at::Tensor flat_grads_;   // zero 0/1: the gradients (parameters' .grad are views into it)
  at::Tensor shard_grads_;  // zero 1/2: this rank's shards of every bucket, back to back
  at::Tensor flat_master_;  // bf16 parameters: the owned ranges' fp32 master, back to back
  std::vector<OwnedRange> owned_;
  absl::Status launch_error_;
  std::vector<BucketEvent> events_;
  std::chrono::steady_clock::time_point backward_start_;
  bool backward_started_ = false;
  double backward_ms_ = 0;
  std::vector<std::unique_ptr<Pending>> in_flight_;  // in launch order
  int64_t fault_drop_tail_ = 0;                      // TESSERA_FAULT_REDUCER_DROP_TAIL (see the file comment)
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators_;
};

}  // namespace tessera::parallel
