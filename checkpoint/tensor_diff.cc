// Comparison of two checkpoints tensor by tensor (tensor_diff.h): both tensors are streamed in
// the same flat chunks, decoded to doubles and compared element by element.
#include "checkpoint/tensor_diff.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

template <typename T>
void DecodeAs(const char* bytes, int64_t count, double* out) {
  for (int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, bytes + i * sizeof(T), sizeof(T));
    out[i] = static_cast<double>(v);
  }
}

double HalfToDouble(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);  // zero and subnormals
  if (exponent == 31) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Reads elements [first, first + count) of `name` as doubles.
absl::Status ReadAsDouble(const CheckpointReader& reader, const TensorEntry& entry, int64_t first,
                          int64_t count, std::vector<char>& bytes, std::vector<double>& out) {
  bytes.resize(static_cast<size_t>(count) * DTypeSize(entry.dtype));
  TS_RETURN_IF_ERROR(
      Annotate(reader.ReadRegion(entry.name, Region::Flat(first, count), bytes.data(), bytes.size()),
               absl::StrCat("comparing ", reader.step_dir(), ": ")));
  out.resize(count);
  DecodeAsDouble(entry.dtype, bytes.data(), count, out.data());
  return absl::OkStatus();
}

// Folds elements [first, first + count) of both sides into `diff`.
void Accumulate(const double* a, const double* b, int64_t first, int64_t count, TensorDiff& diff) {
  for (int64_t i = 0; i < count; ++i) {
    const double x = a[i], y = b[i];
    diff.max_abs_a = std::max(diff.max_abs_a, std::abs(x));  // NaN leaves the maximum as it is
    diff.max_abs_b = std::max(diff.max_abs_b, std::abs(y));
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    ++diff.differing;
    double d = std::abs(x - y);
    if (std::isnan(d)) d = HUGE_VAL;  // one side NaN, or infinities of opposite signs
    if (d > diff.max_abs_diff) {
      diff.max_abs_diff = d;
      diff.worst_index = first + i;
    }
  }
}

absl::Status Compare(const CheckpointReader& a, const TensorEntry& ea, const CheckpointReader& b,
                     const TensorEntry& eb, TensorDiff& diff) {
  diff.numel = NumElements(ea.global_shape);
  const int64_t chunk = std::max(ChunkElements(ea), ChunkElements(eb));
  std::vector<char> bytes;
  std::vector<double> va, vb;
  for (int64_t first = 0; first < diff.numel; first += chunk) {
    const int64_t count = std::min(chunk, diff.numel - first);
    TS_RETURN_IF_ERROR(ReadAsDouble(a, ea, first, count, bytes, va));
    TS_RETURN_IF_ERROR(ReadAsDouble(b, eb, first, count, bytes, vb));
    Accumulate(va.data(), vb.data(), first, count, diff);
  }
  return absl::OkStatus();
}

}  // namespace

void DecodeAsDouble(DType dtype, const char* bytes, int64_t count, double* out) {
  switch (dtype) {
    case DType::kFloat32:
      return DecodeAs<float>(bytes, count, out);
    case DType::kFloat64:
      return DecodeAs<double>(bytes, count, out);
    case DType::kBFloat16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;  // bfloat16 is fp32's top half
        float f;
        std::memcpy(&f, &bits, 4);
        out[i] = f;
      }
      return;
    case DType::kFloat16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        out[i] = HalfToDouble(h);
      }
      return;
    case DType::kInt64:
      return DecodeAs<int64_t>(bytes, count, out);
    case DType::kInt32:
      return DecodeAs<int32_t>(bytes, count, out);
    case DType::kInt16:
      return DecodeAs<int16_t>(bytes, count, out);
    case DType::kInt8:
      return DecodeAs<int8_t>(bytes, count, out);
    case DType::kUInt8:
    case DType::kBool:
      return DecodeAs<uint8_t>(bytes, count, out);
  }
}

const char* DiffKindName(TensorDiff::Kind kind) {
  switch (kind) {
    case TensorDiff::Kind::kCompared:
      return "compared";
    case TensorDiff::Kind::kMissingInA:
      return "missing_in_a";
    case TensorDiff::Kind::kMissingInB:
      return "missing_in_b";
    case TensorDiff::Kind::kShapeMismatch:
      return "shape_mismatch";
  }
  return "unknown";
}

absl::StatusOr<std::vector<TensorDiff>> DiffTensors(const CheckpointReader& a, const CheckpointReader& b,
                                                    const TensorFilter& include) {
  std::map<std::string, std::pair<const TensorEntry*, const TensorEntry*>> by_name;
  for (const TensorEntry& t : a.manifest().tensors) {
    if (!include || include(t.name)) by_name[t.name].first = &t;
  }
  for (const TensorEntry& t : b.manifest().tensors) {
    if (!include || include(t.name)) by_name[t.name].second = &t;
  }
  std::vector<TensorDiff> out;
  for (const auto& [name, entries] : by_name) {
    const auto [ea, eb] = entries;
    TensorDiff diff;
    diff.name = name;
    if (ea) {
      diff.dtype_a = ea->dtype;
      diff.shape_a = ea->global_shape;
    }
    if (eb) {
      diff.dtype_b = eb->dtype;
      diff.shape_b = eb->global_shape;
    }
    if (!ea) {
      diff.kind = TensorDiff::Kind::kMissingInA;
    } else if (!eb) {
      diff.kind = TensorDiff::Kind::kMissingInB;
    } else if (ea->global_shape != eb->global_shape) {
      diff.kind = TensorDiff::Kind::kShapeMismatch;
    } else {
      TS_RETURN_IF_ERROR(Compare(a, *ea, b, *eb, diff));
    }
    out.push_back(std::move(diff));
  }
  return out;
}

}  // namespace tessera::checkpoint
