// Tests of checkpoint/tensor_diff on checkpoints written as if by several ranks: the same
// tensors in different layouts compare equal, one changed element is found (its index and size),
// missing, extra and reshaped tensors are structural errors, other dtypes are compared by value,
// and NaN against a number is an infinite difference.
#include "checkpoint/tensor_diff.h"

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <map>

#include "checkpoint/checkpoint_reader.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;

namespace {

// Writes step 7 of `dir` as `ranks` save it and opens it.
std::unique_ptr<CheckpointReader> Write(const std::string& dir, const std::vector<RankSlices>& ranks) {
  absl::Status s = WriteAsRanks(dir, 7, ranks);
  CATCH_REQUIRE(s.ok());
  auto reader = CheckpointReader::Open(StepDirPath(dir, 7));
  CATCH_REQUIRE(reader.ok());
  return std::move(*reader);
}

std::map<std::string, TensorDiff> ByName(const std::vector<TensorDiff>& diffs) {
  std::map<std::string, TensorDiff> out;
  for (const TensorDiff& d : diffs) out[d.name] = d;
  return out;
}

}  // namespace

CATCH_TEST_CASE("the same tensors saved in different layouts compare equal") {
  TempDir dir("diff-layouts");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  auto one = Write(dir.path() + "/one", OneRankLayout(w, n));
  auto three = Write(dir.path() + "/three", ThreeRankLayout(w, n));
  auto diffs = DiffTensors(*one, *three);
  CATCH_REQUIRE(diffs.ok());
  CATCH_REQUIRE(diffs->size() == 3);
  for (const TensorDiff& d : *diffs) {
    CATCH_INFO(d.name);
    CATCH_CHECK(d.kind == TensorDiff::Kind::kCompared);
    CATCH_CHECK(d.differing == 0);
    CATCH_CHECK(d.max_abs_diff == 0);
    CATCH_CHECK(d.worst_index == -1);
    CATCH_CHECK(d.max_abs_a == d.max_abs_b);
  }
  CATCH_CHECK(ByName(*diffs)["w"].max_abs_a == 1 + 23 * 0.5);

  // The filter: parameters only.
  auto params =
      DiffTensors(*one, *three, [](const std::string& name) { return name.rfind("optim.", 0) != 0; });
  CATCH_REQUIRE(params.ok());
  CATCH_CHECK(params->size() == 2);
}

CATCH_TEST_CASE("one changed element is located: its index, its size, nothing else") {
  TempDir dir("diff-change");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  at::Tensor changed = w.clone();
  changed[5][3] = changed[5][3].item<float>() + 0.001f;  // the tail: the last element
  auto a = Write(dir.path() + "/a", OneRankLayout(w, n));
  auto b = Write(dir.path() + "/b", ThreeRankLayout(changed, n));
  auto diffs = DiffTensors(*a, *b);
  CATCH_REQUIRE(diffs.ok());
  auto by_name = ByName(*diffs);
  const TensorDiff& d = by_name["w"];
  CATCH_CHECK(d.differing == 1);
  CATCH_CHECK(d.worst_index == 23);
  CATCH_CHECK(d.numel == 24);
  CATCH_CHECK(d.max_abs_diff == Approx(0.001).epsilon(1e-3));
  CATCH_CHECK(by_name["n"].differing == 0);
  CATCH_CHECK(by_name["optim.exp_avg/w"].differing == 1);
}

CATCH_TEST_CASE("damaged data is an error") {
  TempDir dir("diff-damage");
  auto reader = Write(dir.path() + "/a", ThreeRankLayout(Logical({6, 4}, 1), Logical({5}, 50)));
  const ShardRecord& shard = (*reader->Tensor("w"))->shards.front();
  {
    std::fstream f(reader->step_dir() + "/" + shard.file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(shard.byte_offset));
    f.put('\x7f');
  }
  CATCH_CHECK_FALSE(DiffTensors(*reader, *reader).ok());
}

CATCH_TEST_CASE("missing, extra and reshaped tensors are structural errors") {
  TempDir dir("diff-structure");
  const at::Tensor w = Logical({6, 4}, 1), n = Logical({5}, 50);
  std::vector<RankSlices> a(1), b(1);
  a[0].tensors = {WholeTensor("w", w), WholeTensor("only_a", n)};
  b[0].tensors = {WholeTensor("w", w.reshape({4, 6})), WholeTensor("only_b", n)};
  auto ra = Write(dir.path() + "/a", a);
  auto rb = Write(dir.path() + "/b", b);
  auto diffs = DiffTensors(*ra, *rb);
  CATCH_REQUIRE(diffs.ok());
  auto by_name = ByName(*diffs);
  CATCH_REQUIRE(by_name.size() == 3);
  CATCH_CHECK(by_name["only_a"].kind == TensorDiff::Kind::kMissingInB);
  CATCH_CHECK(by_name["only_b"].kind == TensorDiff::Kind::kMissingInA);
  CATCH_CHECK(by_name["w"].kind == TensorDiff::Kind::kShapeMismatch);
  CATCH_CHECK(by_name["w"].shape_a == std::vector<int64_t>{6, 4});
  CATCH_CHECK(by_name["w"].shape_b == std::vector<int64_t>{4, 6});
  for (const auto& [name, d] : by_name) CATCH_CHECK(d.structural_error());
  CATCH_CHECK(std::string(DiffKindName(TensorDiff::Kind::kMissingInB)) == "missing_in_b");
}

CATCH_TEST_CASE("other dtypes are compared by value, and NaN against a number is an infinite difference") {
  TempDir dir("diff-dtypes");
  const at::Tensor w = Logical({6, 4}, 1);
  at::Tensor with_nan = w.clone();
  with_nan[0][1] = std::nanf("");
  std::vector<RankSlices> a(1), b(1);
  a[0].tensors = {WholeTensor("bf16", w), WholeTensor("half", w), WholeTensor("nan", w),
                  WholeTensor("both_nan", with_nan)};
  b[0].tensors = {WholeTensor("bf16", w.to(at::kBFloat16)), WholeTensor("half", w.to(at::kHalf)),
                  WholeTensor("nan", with_nan), WholeTensor("both_nan", with_nan)};
  auto ra = Write(dir.path() + "/a", a);
  auto rb = Write(dir.path() + "/b", b);
  auto diffs = DiffTensors(*ra, *rb);
  CATCH_REQUIRE(diffs.ok());
  auto by_name = ByName(*diffs);
  // Logical values are multiples of 0.5 up to 12.5: exact in bfloat16 and float16.
  CATCH_CHECK(by_name["bf16"].dtype_b == DType::kBFloat16);
  CATCH_CHECK(by_name["bf16"].differing == 0);
  CATCH_CHECK(by_name["half"].differing == 0);
  CATCH_CHECK(by_name["half"].max_abs_b == 12.5);
  CATCH_CHECK(std::isinf(by_name["nan"].max_abs_diff));
  CATCH_CHECK(by_name["nan"].worst_index == 1);
  CATCH_CHECK(by_name["both_nan"].differing == 0);

  double decoded[3];
  const uint16_t halves[3] = {0x3c00, 0xc000, 0x0001};  // 1, -2, the smallest subnormal
  DecodeAsDouble(DType::kFloat16, reinterpret_cast<const char*>(halves), 3, decoded);
  CATCH_CHECK(decoded[0] == 1.0);
  CATCH_CHECK(decoded[1] == -2.0);
  CATCH_CHECK(decoded[2] == std::ldexp(1.0, -24));
}
