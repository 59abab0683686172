// A tensor-by-tensor comparison of two checkpoints, each assembled from its own shards, so the
// two may come from different parallel layouts: for every logical tensor present in either,
// the largest absolute difference of its elements, the largest magnitudes on both sides and how
// many elements differ at all. This is how layout-parity tests compare the final parameters of
// a multi-process run with the single-process run's, and how a person asks "where do these two
// runs part ways". No LibTorch; values are compared as doubles (exact for every floating dtype).
//
//   TS_ASSIGN_OR_RETURN(std::vector<TensorDiff> diffs, DiffTensors(*reader_a, *reader_b));
//   for (const TensorDiff& d : diffs)
//     if (d.kind != TensorDiff::Kind::kCompared || d.max_abs_diff > tolerance) ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/manifest.h"
#include "checkpoint/tensor_digest.h"

namespace tessera::checkpoint {

struct TensorDiff {
  enum class Kind {
    kCompared,       // present in both with the same shape: the figures below are meaningful
    kMissingInA,     // only B has it
    kMissingInB,     // only A has it
    kShapeMismatch,  // both have it, with different global shapes
  };
  std::string name;
  Kind kind = Kind::kCompared;
  DType dtype_a = DType::kFloat32, dtype_b = DType::kFloat32;  // may differ: values are compared
  std::vector<int64_t> shape_a, shape_b;
  int64_t numel = 0;
  // Elements whose values differ (NaN equals NaN here; +0 equals -0).
  int64_t differing = 0;
  // max |a - b| over the elements; +infinity where one side is NaN or infinite and the other
  // is not the same value.
  double max_abs_diff = 0;
  int64_t worst_index = -1;  // flat index of the first element with max_abs_diff; -1 if none
  double max_abs_a = 0, max_abs_b = 0;

  // Missing on one side or shaped differently: the checkpoints do not hold the same model.
  bool structural_error() const { return kind != Kind::kCompared; }
};

// "compared", "missing_in_a", "missing_in_b", "shape_mismatch".
const char* DiffKindName(TensorDiff::Kind kind);

// One entry per tensor name that `include` accepts in either checkpoint, sorted by name.
// Errors are only for unreadable data (a failed checksum, a truncated shard); structural
// differences are entries.
absl::StatusOr<std::vector<TensorDiff>> DiffTensors(const CheckpointReader& a, const CheckpointReader& b,
                                                    const TensorFilter& include = nullptr);

// Decodes `count` little-endian elements of `dtype` into doubles: exact for every dtype except
// int64 values beyond 2^53.
void DecodeAsDouble(DType dtype, const char* bytes, int64_t count, double* out);

}  // namespace tessera::checkpoint
