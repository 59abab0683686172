// TensorSlice constructors, dtype mapping and region reads into at::Tensor (tensor_slices.h).
#include "checkpoint/tensor_slices.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

struct Pair {
  at::ScalarType type;
  DType dtype;
};
constexpr Pair kPairs[] = {{at::kFloat, DType::kFloat32}, {at::kBFloat16, DType::kBFloat16},
                           {at::kHalf, DType::kFloat16},  {at::kDouble, DType::kFloat64},
                           {at::kLong, DType::kInt64},    {at::kInt, DType::kInt32},
                           {at::kShort, DType::kInt16},   {at::kChar, DType::kInt8},
                           {at::kByte, DType::kUInt8},    {at::kBool, DType::kBool}};

std::vector<int64_t> Sizes(const at::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

}  // namespace

TensorSlice WholeTensor(std::string name, const at::Tensor& tensor) {
  return TensorSlice{std::move(name), Sizes(tensor), Region::Whole(Sizes(tensor)), tensor};
}

TensorSlice BoxSlice(std::string name, std::vector<int64_t> global_shape, std::vector<int64_t> offset,
                     const at::Tensor& data) {
  return TensorSlice{std::move(name), std::move(global_shape), Region::Box(std::move(offset), Sizes(data)),
                     data};
}

TensorSlice FlatSlice(std::string name, std::vector<int64_t> global_shape, int64_t begin,
                      const at::Tensor& data) {
  return TensorSlice{std::move(name), std::move(global_shape), Region::Flat(begin, data.numel()),
                     data.reshape({-1})};
}

TensorSlice ShardSpecSlice(std::string name, std::vector<int64_t> global_shape,
                           const parallel::ShardSpec& spec, const at::Tensor& local) {
  if (!spec.is_split())
    return BoxSlice(std::move(name), std::move(global_shape), std::vector<int64_t>(local.dim(), 0), local);
  std::vector<int64_t> offset(local.dim(), 0);
  // A block wholly past the end (more parts than rows) saves nothing, at the end.
  offset[spec.dim] = std::min(spec.begin(), spec.global_size);
  // The last blocks may hold fewer real rows than block_size() (or none): the rest is padding.
  const int64_t rows = std::max<int64_t>(spec.end() - spec.begin(), 0);
  return BoxSlice(std::move(name), std::move(global_shape), std::move(offset),
                  local.narrow(spec.dim, 0, rows));
}

absl::StatusOr<DType> DTypeOf(at::ScalarType type) {
  for (const Pair& p : kPairs) {
    if (p.type == type) return p.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensors of dtype ", c10::toString(type), " cannot be saved"));
}

at::ScalarType ScalarTypeOf(DType dtype) {
  for (const Pair& p : kPairs) {
    if (p.dtype == dtype) return p.type;
  }
  return at::kFloat;
}

absl::Status CheckSlice(const TensorSlice& s) {
  const std::string what = absl::StrCat("saving tensor '", s.name, "'");
  if (s.name.empty()) return absl::InvalidArgumentError("saving a tensor without a name");
  if (!s.data.defined())
    return absl::InvalidArgumentError(absl::StrCat(what, ": the data tensor is undefined"));
  TS_RETURN_IF_ERROR(DTypeOf(s.data.scalar_type()).status());
  TS_RETURN_IF_ERROR(ValidateRegion(s.region, s.global_shape, what));
  if (s.data.numel() != s.region.numel()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": region ", s.region.ToString(), " has ",
                                                   s.region.numel(), " elements but the data has ",
                                                   s.data.numel()));
  }
  if (s.region.kind == Region::Kind::kBox && !s.region.shape.empty() && Sizes(s.data) != s.region.shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": region ", s.region.ToString(), " has shape ",
                                                   ShapeToString(s.region.shape), " but the data has ",
                                                   ShapeToString(Sizes(s.data))));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> ReadRegionAsTensor(const CheckpointReader& reader, const std::string& name,
                                              const Region& region) {
  TS_ASSIGN_OR_RETURN(const TensorEntry* t, reader.Tensor(name));
  TS_RETURN_IF_ERROR(ValidateRegion(region, t->global_shape, absl::StrCat("reading tensor '", name, "'")));
  const std::vector<int64_t> shape =
      region.kind == Region::Kind::kFlat ? std::vector<int64_t>{region.flat_count} : region.shape;
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(ScalarTypeOf(t->dtype)));
  TS_RETURN_IF_ERROR(reader.ReadRegion(name, region, out.data_ptr(), out.nbytes()));
  return out;
}

absl::StatusOr<at::Tensor> ReadBox(const CheckpointReader& reader, const std::string& name,
                                   const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
  return ReadRegionAsTensor(reader, name, Region::Box(offset, shape));
}

absl::StatusOr<at::Tensor> ReadFlatRange(const CheckpointReader& reader, const std::string& name,
                                         int64_t begin, int64_t count) {
  return ReadRegionAsTensor(reader, name, Region::Flat(begin, count));
}

absl::StatusOr<at::Tensor> ReadTensor(const CheckpointReader& reader, const std::string& name) {
  TS_ASSIGN_OR_RETURN(const TensorEntry* t, reader.Tensor(name));
  return ReadRegionAsTensor(reader, name, Region::Whole(t->global_shape));
}

absl::StatusOr<at::Tensor> ReadShardSpecBlock(const CheckpointReader& reader, const std::string& name,
                                              const parallel::ShardSpec& spec) {
  TS_ASSIGN_OR_RETURN(const TensorEntry* t, reader.Tensor(name));
  if (!spec.is_split()) return ReadTensor(reader, name);
  if (spec.dim >= static_cast<int>(t->global_shape.size()) || t->global_shape[spec.dim] != spec.global_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has shape ", ShapeToString(t->global_shape),
                     "; the shard spec splits dimension ", spec.dim, " of size ", spec.global_size));
  }
  std::vector<int64_t> block_shape = t->global_shape;
  block_shape[spec.dim] = spec.block_size();
  at::Tensor block = at::zeros(block_shape, at::TensorOptions().dtype(ScalarTypeOf(t->dtype)));
  const int64_t rows = std::max<int64_t>(spec.end() - spec.begin(), 0);
  if (rows == 0) return block;
  std::vector<int64_t> offset(t->global_shape.size(), 0), shape = t->global_shape;
  offset[spec.dim] = spec.begin();
  shape[spec.dim] = rows;
  TS_ASSIGN_OR_RETURN(at::Tensor real, ReadBox(reader, name, offset, shape));
  block.narrow(spec.dim, 0, rows).copy_(real);
  return block;
}

}  // namespace tessera::checkpoint
