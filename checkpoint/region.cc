// Region geometry. Copies run over maximal contiguous runs: for two boxes, the trailing
// dimensions that both regions and their intersection span completely merge into one run (a
// whole tensor is one memcpy, a row-split block one per block); a box against a flat range walks
// the box's rows in increasing global order and clips each to the range.
#include "checkpoint/region.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/checked_math.h"

namespace tessera::checkpoint {
namespace {

// A scalar (shape []) is treated as the one-element vector [1] (its box as [0:1]).
std::vector<int64_t> AtLeast1d(const std::vector<int64_t>& shape) {
  return shape.empty() ? std::vector<int64_t>{1} : shape;
}

struct Box {
  std::vector<int64_t> lo, shape;
};

Box AsBox(const Region& r) {
  if (r.offset.empty() && r.shape.empty()) return {{0}, {1}};
  return {r.offset, r.shape};
}

// Calls fn(outer_index) for every index of dims [0, j) of `shape`, in row-major order. Returns
// early when fn returns false.
void ForEachOuter(const std::vector<int64_t>& shape, size_t j,
                  const std::function<bool(const std::vector<int64_t>&)>& fn) {
  std::vector<int64_t> idx(j, 0);
  for (size_t i = 0; i < j; ++i) {
    if (shape[i] == 0) return;
  }
  while (true) {
    if (!fn(idx)) return;
    size_t i = j;
    while (i > 0) {
      --i;
      if (++idx[i] < shape[i]) break;
      idx[i] = 0;
      if (i == 0) return;
    }
    if (j == 0) return;
  }
}

std::vector<int64_t> Strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

int64_t BoxBox(size_t es, const Box& s, const char* src, const Box& d, char* dst) {
  const size_t n = s.lo.size();
  std::vector<int64_t> lo(n), ext(n);
  for (size_t i = 0; i < n; ++i) {
    lo[i] = std::max(s.lo[i], d.lo[i]);
    const int64_t hi = std::min(s.lo[i] + s.shape[i], d.lo[i] + d.shape[i]);
    if (hi <= lo[i]) return 0;
    ext[i] = hi - lo[i];
  }
  // Merge trailing dimensions that the intersection spans completely in both regions.
  size_t j = n - 1;
  int64_t run = ext[j];
  while (j > 0 && ext[j] == s.shape[j] && ext[j] == d.shape[j]) {
    --j;
    run *= ext[j];
  }
  const std::vector<int64_t> ss = Strides(s.shape), ds = Strides(d.shape);
  int64_t base_s = 0, base_d = 0;
  for (size_t i = j; i < n; ++i) {
    base_s += (lo[i] - s.lo[i]) * ss[i];
    base_d += (lo[i] - d.lo[i]) * ds[i];
  }
  int64_t copied = 0;
  ForEachOuter(ext, j, [&](const std::vector<int64_t>& idx) {
    int64_t os = base_s, od = base_d;
    for (size_t i = 0; i < j; ++i) {
      os += (lo[i] + idx[i] - s.lo[i]) * ss[i];
      od += (lo[i] + idx[i] - d.lo[i]) * ds[i];
    }
    std::memcpy(dst + od * es, src + os * es, run * es);
    copied += run;
    return true;
  });
  return copied;
}

// Walks the rows of `box` (maximal runs contiguous in the global tensor) that intersect
// [begin, end), calling fn(box_local, global_start, count) for each clipped piece.
void ForEachBoxRunInRange(const std::vector<int64_t>& global, const Box& box, int64_t begin, int64_t end,
                          const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const size_t n = box.lo.size();
  for (int64_t s : box.shape) {
    if (s == 0) return;
  }
  size_t j = n - 1;
  int64_t run = box.shape[j];
  while (j > 0 && box.shape[j] == global[j]) {
    --j;
    run *= box.shape[j];
  }
  const std::vector<int64_t> gs = Strides(global);
  int64_t base = 0;
  for (size_t i = j; i < n; ++i) base += box.lo[i] * gs[i];
  int64_t row = 0;
  ForEachOuter(box.shape, j, [&](const std::vector<int64_t>& idx) {
    int64_t g = base;
    for (size_t i = 0; i < j; ++i) g += (box.lo[i] + idx[i]) * gs[i];
    const int64_t local = row++ * run;
    if (g >= end) return false;  // rows come in increasing global order
    const int64_t a = std::max(g, begin), b = std::min(g + run, end);
    if (a < b) fn(local + (a - g), a, b - a);
    return true;
  });
}

}  // namespace

Region Region::Box(std::vector<int64_t> offset, std::vector<int64_t> shape) {
  Region r;
  r.kind = Kind::kBox;
  r.offset = std::move(offset);
  r.shape = std::move(shape);
  return r;
}

Region Region::Flat(int64_t begin, int64_t count) {
  Region r;
  r.kind = Kind::kFlat;
  r.flat_begin = begin;
  r.flat_count = count;
  return r;
}

Region Region::Whole(const std::vector<int64_t>& global_shape) {
  return Box(std::vector<int64_t>(global_shape.size(), 0), global_shape);
}

int64_t Region::numel() const { return kind == Kind::kFlat ? flat_count : NumElements(shape); }

namespace {

// "begin:end", or "begin:begin+size" when the end does not fit int64: regions are printed in the
// messages that reject them, so the text must not overflow either.
std::string DimText(int64_t begin, int64_t size) {
  if (const std::optional<int64_t> end = CheckedAdd(begin, size)) return absl::StrCat(begin, ":", *end);
  return absl::StrCat(begin, ":", begin, "+", size);
}

}  // namespace

std::string Region::ToString() const {
  if (kind == Kind::kFlat) return absl::StrCat("flat[", DimText(flat_begin, flat_count), ")");
  std::vector<std::string> dims;
  for (size_t i = 0; i < shape.size(); ++i)
    dims.push_back(DimText(i < offset.size() ? offset[i] : 0, shape[i]));
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

bool Region::operator==(const Region& o) const {
  if (kind != o.kind) return false;
  if (kind == Kind::kFlat) return flat_begin == o.flat_begin && flat_count == o.flat_count;
  return offset == o.offset && shape == o.shape;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  // Exact for every shape ValidateShape accepts, including [2^60, 48, 0], whose running product
  // overflows before the 0 is reached (found by fuzz/checkpoint_manifest_fuzzer); otherwise it
  // saturates instead of overflowing.
  return CheckedNumElements(shape).value_or(std::numeric_limits<int64_t>::max());
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ValidateShape(const std::vector<int64_t>& shape, const std::string& what) {
  for (int64_t s : shape) {
    if (s < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": global shape ", ShapeToString(shape), " has a negative size"));
    }
  }
  if (!CheckedNumElements(shape)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": global shape ", ShapeToString(shape), " has more elements than fit in int64"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRegion(const Region& r, const std::vector<int64_t>& global_shape,
                            const std::string& what) {
  // With the global count in range, every sum and product below (and those of the copies, for a
  // region that passes) stays within int64.
  if (absl::Status shape = ValidateShape(global_shape, what); !shape.ok()) return shape;
  if (r.kind == Region::Kind::kFlat) {
    const int64_t numel = NumElements(global_shape);
    if (r.flat_begin < 0 || r.flat_count < 0 || r.flat_begin > numel || r.flat_count > numel - r.flat_begin) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", r.ToString(), " is outside the ", numel,
                                                     " elements of a tensor of shape ",
                                                     ShapeToString(global_shape)));
    }
    return absl::OkStatus();
  }
  if (r.offset.size() != global_shape.size() || r.shape.size() != global_shape.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": box with ", r.offset.size(), " offsets and ", r.shape.size(), " sizes for a tensor of ",
        global_shape.size(), " dimensions ", ShapeToString(global_shape)));
  }
  for (size_t i = 0; i < global_shape.size(); ++i) {
    if (r.offset[i] < 0 || r.shape[i] < 0 || r.offset[i] > global_shape[i] ||
        r.shape[i] > global_shape[i] - r.offset[i]) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": box ", r.ToString(), " exceeds dimension ", i,
                                                     " of the global shape ", ShapeToString(global_shape)));
    }
  }
  return absl::OkStatus();
}

bool Overlaps(const Region& a, const Region& b, const std::vector<int64_t>& global_shape) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  if (a.kind == Region::Kind::kFlat && b.kind == Region::Kind::kFlat) {
    return std::max(a.flat_begin, b.flat_begin) <
           std::min(a.flat_begin + a.flat_count, b.flat_begin + b.flat_count);
  }
  if (a.kind == Region::Kind::kBox && b.kind == Region::Kind::kBox) {
    const Box x = AsBox(a), y = AsBox(b);
    for (size_t i = 0; i < x.lo.size(); ++i) {
      if (std::max(x.lo[i], y.lo[i]) >= std::min(x.lo[i] + x.shape[i], y.lo[i] + y.shape[i])) return false;
    }
    return true;
  }
  const Region& flat = a.kind == Region::Kind::kFlat ? a : b;
  const Region& box = a.kind == Region::Kind::kFlat ? b : a;
  bool found = false;
  ForEachBoxRunInRange(AtLeast1d(global_shape), AsBox(box), flat.flat_begin,
                       flat.flat_begin + flat.flat_count, [&](int64_t, int64_t, int64_t) { found = true; });
  return found;
}

int64_t CopyOverlap(const std::vector<int64_t>& global_shape, size_t es, const Region& sr, const char* src,
                    const Region& dr, char* dst) {
  if (sr.numel() == 0 || dr.numel() == 0) return 0;
  const std::vector<int64_t> global = AtLeast1d(global_shape);
  if (sr.kind == Region::Kind::kBox && dr.kind == Region::Kind::kBox)
    return BoxBox(es, AsBox(sr), src, AsBox(dr), dst);
  if (sr.kind == Region::Kind::kFlat && dr.kind == Region::Kind::kFlat) {
    const int64_t lo = std::max(sr.flat_begin, dr.flat_begin);
    const int64_t hi = std::min(sr.flat_begin + sr.flat_count, dr.flat_begin + dr.flat_count);
    if (hi <= lo) return 0;
    std::memcpy(dst + (lo - dr.flat_begin) * es, src + (lo - sr.flat_begin) * es, (hi - lo) * es);
    return hi - lo;
  }
  int64_t copied = 0;
  if (sr.kind == Region::Kind::kBox) {  // box -> flat
    ForEachBoxRunInRange(global, AsBox(sr), dr.flat_begin, dr.flat_begin + dr.flat_count,
                         [&](int64_t local, int64_t g, int64_t count) {
                           std::memcpy(dst + (g - dr.flat_begin) * es, src + local * es, count * es);
                           copied += count;
                         });
  } else {  // flat -> box
    ForEachBoxRunInRange(global, AsBox(dr), sr.flat_begin, sr.flat_begin + sr.flat_count,
                         [&](int64_t local, int64_t g, int64_t count) {
                           std::memcpy(dst + local * es, src + (g - sr.flat_begin) * es, count * es);
                           copied += count;
                         });
  }
  return copied;
}

}  // namespace tessera::checkpoint
