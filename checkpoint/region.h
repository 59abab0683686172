// Which part of a logical tensor a slice holds, and copying between slices. A region is either a
// box (an offset and a size per dimension: tensor- and pipeline-parallel shards) or a range of
// elements of the row-major flattened tensor (ZeRO's flat shards). Reading any slice of a saved
// tensor, in any layout, is copying the overlap of every saved region with the wanted one
// (resharding); this file is that geometry, on raw bytes, without LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tessera::checkpoint {

struct Region {
  enum class Kind { kBox, kFlat };
  Kind kind = Kind::kBox;
  // kBox: per-dimension offset and size, as many as the tensor has dimensions.
  std::vector<int64_t> offset;
  std::vector<int64_t> shape;
  // kFlat: elements [flat_begin, flat_begin + flat_count) of the flattened tensor.
  int64_t flat_begin = 0;
  int64_t flat_count = 0;

  static Region Box(std::vector<int64_t> offset, std::vector<int64_t> shape);
  static Region Flat(int64_t begin, int64_t count);
  // The box of the whole tensor.
  static Region Whole(const std::vector<int64_t>& global_shape);

  int64_t numel() const;
  // "[0:4, 8:16]" (half-open per dimension) or "flat[100:200)".
  std::string ToString() const;
  bool operator==(const Region& other) const;
};

// Number of elements of a shape (1 for a scalar, shape []; 0 whenever a size is 0, however large
// the others). Exact for shapes ValidateShape accepts; INT64_MAX for any other.
int64_t NumElements(const std::vector<int64_t>& shape);
// "[4, 8]".
std::string ShapeToString(const std::vector<int64_t>& shape);

// Checks that no size of `shape` is negative and that its element count fits in int64; the
// message names `what`.
absl::Status ValidateShape(const std::vector<int64_t>& shape, const std::string& what);
// Checks that `region` lies inside a tensor of `global_shape` (a valid shape, dimensions match,
// offsets and sizes non-negative, ends within bounds); the message names `what`.
absl::Status ValidateRegion(const Region& region, const std::vector<int64_t>& global_shape,
                            const std::string& what);

// Whether two valid regions of the same tensor share an element.
bool Overlaps(const Region& a, const Region& b, const std::vector<int64_t>& global_shape);

// Copies the elements that lie in both regions from `src` (the row-major elements of
// `src_region`) to their places in `dst` (the row-major elements of `dst_region`), and returns
// how many elements were copied. Both regions must be valid for `global_shape`; `element_size`
// is the bytes per element.
int64_t CopyOverlap(const std::vector<int64_t>& global_shape, size_t element_size, const Region& src_region,
                    const char* src, const Region& dst_region, char* dst);

}  // namespace tessera::checkpoint
