// The LibTorch side of checkpoints: a rank's slice of a logical tensor as an at::Tensor plus the
// region it covers (what CheckpointWriter saves), and reads of any region of a saved tensor
// into an at::Tensor (what resuming in any layout uses). Constructors for the three kinds of
// slices: a whole tensor, a box (tensor/pipeline-parallel shards), a range of the flattened
// tensor (ZeRO), and a tensor-parallel block described by parallel::ShardSpec (its padding rows
// are dropped: they are never saved).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/manifest.h"
#include "checkpoint/region.h"
#include "parallel/tensor_parallel/shard_spec.h"

namespace tessera::checkpoint {

struct TensorSlice {
  std::string name;                   // logical name
  std::vector<int64_t> global_shape;  // of the logical tensor
  Region region;                      // what this rank saves of it
  at::Tensor data;  // the region's elements: shape = the box's shape, or 1-D of flat_count (any
                    // device, any strides; saved in its own dtype)
};

// The whole tensor.
TensorSlice WholeTensor(std::string name, const at::Tensor& tensor);
// The box of `data.sizes()` at `offset` of a tensor of `global_shape`.
TensorSlice BoxSlice(std::string name, std::vector<int64_t> global_shape, std::vector<int64_t> offset,
                     const at::Tensor& data);
// Elements [begin, begin + data.numel()) of the flattened tensor; `data` is viewed as 1-D.
TensorSlice FlatSlice(std::string name, std::vector<int64_t> global_shape, int64_t begin,
                      const at::Tensor& data);
// This rank's block of a tensor split by `spec` (`local` is the padded block), without its
// padding rows. Ranks holding replicas of the same block (spec.replicas > 1, or data-parallel
// copies) may all save it (the reader treats identical regions as copies) or, to save space and
// time, only one of them.
TensorSlice ShardSpecSlice(std::string name, std::vector<int64_t> global_shape,
                           const parallel::ShardSpec& spec, const at::Tensor& local);

absl::StatusOr<DType> DTypeOf(at::ScalarType type);
at::ScalarType ScalarTypeOf(DType dtype);
// The slice is well formed: a supported dtype, a region inside global_shape, and data with as
// many elements as the region (and the box's shape).
absl::Status CheckSlice(const TensorSlice& slice);

// Reads of saved tensors into new CPU tensors of the saved dtype.
// A box: the result has shape `shape`.
absl::StatusOr<at::Tensor> ReadBox(const CheckpointReader& reader, const std::string& name,
                                   const std::vector<int64_t>& offset, const std::vector<int64_t>& shape);
// Elements [begin, begin + count) of the flattened tensor, as a 1-D tensor.
absl::StatusOr<at::Tensor> ReadFlatRange(const CheckpointReader& reader, const std::string& name,
                                         int64_t begin, int64_t count);
// The whole logical tensor.
absl::StatusOr<at::Tensor> ReadTensor(const CheckpointReader& reader, const std::string& name);
// Any region (box-shaped or 1-D result).
absl::StatusOr<at::Tensor> ReadRegionAsTensor(const CheckpointReader& reader, const std::string& name,
                                              const Region& region);
// The padded block `spec` assigns to this rank: shape = global shape with spec.dim's size
// replaced by spec.block_size(); padding rows are zero.
absl::StatusOr<at::Tensor> ReadShardSpecBlock(const CheckpointReader& reader, const std::string& name,
                                              const parallel::ShardSpec& spec);

}  // namespace tessera::checkpoint
