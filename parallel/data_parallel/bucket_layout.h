// The layout of the data-parallel flat buffers as plain arithmetic over parameter sizes, shared by
// the gradient reducer (grad_reducer.h), which allocates it, and the planner (`tessera
// validate`), which predicts each rank's static memory from it without allocating anything, so
// that the two agree to the byte.
//
// Parameters are taken in the reverse of the order given (the order of use in the forward pass:
// the first buckets are the first whose gradients backward completes) and cut into buckets of
// about bucket_mb MiB of fp32 gradients; parameters marked late form one last bucket. Inside a
// bucket the decayed parameters come first (so each shard's decayed part is a prefix). Each
// bucket is padded to a multiple of the DP size and split into DP equal shards, so a parameter
// smaller than DP elements is simply padded with the rest of its bucket.
//
// Under zero 3 (parameters sharded between uses) a bucket also never spans two units (the
// embedding, one transformer block, the final norm + head: FlatParameter::unit), so that a
// unit's parameters can be gathered and freed bucket by bucket; the late bucket is the
// exception, kept gathered for the whole run.
//
// Parameters that one matrix product reads together (q|k|v, gate|up: FlatParameter::
// fuse_with_next) are laid out as one run, in the order given and in one bucket, so that the
// product reads their rows as one matrix straight from the buffer (kernels::StackRows) instead
// of concatenating copies on every forward. A run's members share decay, late and unit; a member
// that does not is not joined to the run.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::parallel {

struct FlatParameter {
  int64_t numel = 0;
  bool decay = true;
  bool late = false;
  int unit = 0;  // zero 3's gather unit, numbered in forward order (bucket boundaries fall between units)
  bool fuse_with_next = false;  // read by one product with the next: laid out right before it
};

struct BucketSpan {
  std::vector<int> params;  // indices into the given parameters, in buffer order
  int64_t begin = 0;        // offset in the flat buffers
  int64_t numel = 0;        // parameters' elements
  int64_t padded = 0;       // numel rounded up to a multiple of the DP size
  int64_t shard_begin = 0;  // offset of this bucket's shard among this rank's shards
  int64_t decayed = 0;      // the first `decayed` elements are decayed parameters
  bool late = false;
  int unit = -1;  // split_units: the unit of every parameter in the bucket; -1 for the late bucket
};

struct FlatLayout {
  std::vector<BucketSpan> buckets;
  std::vector<int64_t> param_offset;  // per parameter: where it starts in the flat buffers
  std::vector<int> param_bucket;      // per parameter: its bucket
  int64_t total = 0;                  // elements of the flat buffers (padding included)
  int64_t shard_total = 0;            // elements of one rank's shards of every bucket
};

// `split_units` (zero 3): a new bucket starts wherever the unit changes.
FlatLayout LayOutFlatBuffers(const std::vector<FlatParameter>& params, int dp, double bucket_mb,
                             bool split_units = false);

// Bytes a rank holds between steps for `layout` (F = layout.total elements): weights 4F (fp32) or
// 2F (bf16); with bf16 weights an fp32 master of the owned elements; AdamW's two fp32 moments
// of the owned elements (all F at zero 0, shard_total under ZeRO); gradients 4F at zero 0, the
// full buffer plus the shard at zero 1, the shard alone at zero 2. At zero 3 the weights are
// this rank's shards (2 or 4 B x shard_total) plus the late bucket, which stays gathered (its
// padded size again): the units gathered for use come and go within a step (GatheredUnitBound).
struct StaticBytes {
  int64_t weights = 0, master = 0, moments = 0, grads = 0;
  int64_t total() const { return weights + master + moments + grads; }
};
StaticBytes StaticBytesOf(const FlatLayout& layout, int zero, bool bf16_params);

// Zero 3: the most parameter bytes gathered at once (late bucket excluded) that gathering on use
// with `prefetch` units ahead can need, for units numbered 0 (the embedding) to the last (the
// head): the unit in use, `prefetch` more gathered ahead, and one whose release waits for its
// last gradient, i.e. the largest prefetch + 2 consecutive units in forward order; plus unit 0
// throughout when `tied_head` (the head reads the embedding, whose gradient completes last).
int64_t GatheredUnitBound(const FlatLayout& layout, int prefetch, bool tied_head, bool bf16_params);

}  // namespace tessera::parallel
