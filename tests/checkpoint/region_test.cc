// Tests of trainer/checkpoint/region: copying the overlap of any two regions (boxes and flat
// ranges, any dimension count, scalars) against LibTorch's own indexing of the full tensor, and
// region validation.
#include "checkpoint/region.h"

#include <ATen/ATen.h>

#include <limits>
#include <random>

#include "tests/catch_compat.h"

using tessera::checkpoint::CopyOverlap;
using tessera::checkpoint::Overlaps;
using tessera::checkpoint::Region;
using tessera::checkpoint::ValidateRegion;
using tessera::checkpoint::ValidateShape;

namespace {

// The elements of `r` of `full`, row-major, as a 1-D tensor.
at::Tensor Extract(const at::Tensor& full, const Region& r) {
  if (r.kind == Region::Kind::kFlat)
    return full.reshape({-1}).slice(0, r.flat_begin, r.flat_begin + r.flat_count).clone();
  at::Tensor t = full;
  for (size_t d = 0; d < r.shape.size(); ++d) t = t.narrow(d, r.offset[d], r.shape[d]);
  return t.contiguous().reshape({-1});
}

// A mask of the full tensor's elements inside `r`.
at::Tensor Mask(const std::vector<int64_t>& shape, const Region& r) {
  at::Tensor m = at::zeros(shape, at::kBool);
  if (r.kind == Region::Kind::kFlat) {
    m.view({-1}).slice(0, r.flat_begin, r.flat_begin + r.flat_count).fill_(true);
    return m;
  }
  at::Tensor t = m;
  for (size_t d = 0; d < r.shape.size(); ++d) t = t.narrow(d, r.offset[d], r.shape[d]);
  t.fill_(true);
  return m;
}

Region RandomRegion(std::mt19937& rng, const std::vector<int64_t>& shape) {
  const int64_t numel = tessera::checkpoint::NumElements(shape);
  if (rng() % 3 == 0) {
    const int64_t a = rng() % (numel + 1), b = rng() % (numel + 1);
    return Region::Flat(std::min(a, b), std::max(a, b) - std::min(a, b));
  }
  std::vector<int64_t> off, sz;
  for (int64_t s : shape) {
    const int64_t a = rng() % (s + 1), b = rng() % (s + 1);
    off.push_back(std::min(a, b));
    sz.push_back(std::max(a, b) - std::min(a, b));
  }
  return Region::Box(off, sz);
}

}  // namespace

CATCH_TEST_CASE("CopyOverlap equals indexing the full tensor, for random boxes and flat ranges") {
  std::mt19937 rng(11);
  const std::vector<std::vector<int64_t>> shapes = {{17}, {6, 5}, {4, 3, 5}, {2, 3, 4, 5}, {1, 7}, {7, 1}};
  int nonempty = 0;
  for (const auto& shape : shapes) {
    const at::Tensor full =
        at::arange(tessera::checkpoint::NumElements(shape), at::kFloat).reshape(shape) + 1;
    for (int trial = 0; trial < 200; ++trial) {
      const Region src = RandomRegion(rng, shape), dst = RandomRegion(rng, shape);
      CATCH_REQUIRE(ValidateRegion(src, shape, "src").ok());
      const at::Tensor src_data = Extract(full, src);
      at::Tensor out = at::zeros({dst.numel()}, at::kFloat);
      const int64_t copied =
          CopyOverlap(shape, sizeof(float), src, static_cast<const char*>(src_data.data_ptr()), dst,
                      static_cast<char*>(out.data_ptr()));
      // Expected: the full tensor where both masks hold, zero elsewhere, read in dst's order.
      const at::Tensor both = Mask(shape, src) & Mask(shape, dst);
      const at::Tensor expected = Extract(at::where(both, full, at::zeros_like(full)), dst);
      CATCH_CHECK(copied == both.sum().item<int64_t>());
      CATCH_CHECK(at::equal(out, expected));
      CATCH_CHECK(Overlaps(src, dst, shape) == (copied > 0));
      nonempty += copied > 0;
    }
  }
  CATCH_CHECK(nonempty > 300);  // the random regions did overlap often enough to test something
}

CATCH_TEST_CASE("NumElements: a zero size anywhere gives 0 without overflowing on the way") {
  using tessera::checkpoint::NumElements;
  // The shape the manifest fuzzer found: the running product overflows before the 0 is reached.
  CATCH_CHECK(NumElements({891284000256000000LL, 48, 0}) == 0);
  CATCH_CHECK(NumElements({0, int64_t{1} << 62, 4}) == 0);
  CATCH_CHECK(NumElements({int64_t{1} << 62, 4}) == std::numeric_limits<int64_t>::max());
  CATCH_CHECK(NumElements({3, 5}) == 15);
  CATCH_CHECK(tessera::checkpoint::ValidateShape({891284000256000000LL, 48, 0}, "t").ok());
}

CATCH_TEST_CASE("a scalar tensor is one element") {
  const std::vector<int64_t> scalar;
  const Region whole = Region::Whole(scalar);
  CATCH_CHECK(whole.numel() == 1);
  CATCH_CHECK(ValidateRegion(whole, scalar, "s").ok());
  const float src = 3.5f;
  float dst = 0;
  CATCH_CHECK(CopyOverlap(scalar, sizeof(float), whole, reinterpret_cast<const char*>(&src),
                          Region::Flat(0, 1), reinterpret_cast<char*>(&dst)) == 1);
  CATCH_CHECK(dst == 3.5f);
}

CATCH_TEST_CASE("ValidateRegion names what is wrong") {
  const std::vector<int64_t> shape = {4, 6};
  CATCH_CHECK(ValidateRegion(Region::Box({0, 0}, {4, 6}), shape, "t").ok());
  const auto past = ValidateRegion(Region::Box({2, 0}, {3, 6}), shape, "tensor 'w'");
  CATCH_CHECK(!past.ok());
  CATCH_CHECK(std::string(past.message()).find("tensor 'w': box [2:5, 0:6] exceeds dimension 0") !=
              std::string::npos);
  CATCH_CHECK(!ValidateRegion(Region::Box({0}, {4}), shape, "t").ok());  // wrong rank
  CATCH_CHECK(!ValidateRegion(Region::Flat(20, 5), shape, "t").ok());    // 25 > 24
  CATCH_CHECK(ValidateRegion(Region::Flat(20, 4), shape, "t").ok());
  CATCH_CHECK(!ValidateRegion(Region::Box({-1, 0}, {1, 6}), shape, "t").ok());
}

CATCH_TEST_CASE("ValidateRegion refuses shapes and regions whose arithmetic would overflow") {
  constexpr int64_t kMax = INT64_MAX;
  // A global shape whose element count does not fit int64, and one with a negative size.
  const auto huge = ValidateRegion(Region::Flat(0, 1), {int64_t{1} << 32, int64_t{1} << 32}, "tensor 'h'");
  CATCH_CHECK(std::string(huge.message()) ==
              "tensor 'h': global shape [4294967296, 4294967296] has more elements than fit in int64");
  CATCH_CHECK(std::string(ValidateShape({3, -1}, "t").message()).find("has a negative size") !=
              std::string::npos);
  CATCH_CHECK(ValidateShape({int64_t{1} << 40, int64_t{1} << 40, 0}, "t").ok());  // zero elements
  // Ends that overflow int64 (begin + count, offset + size) are outside, not wrapped inside.
  const std::vector<int64_t> shape = {4, 6};
  const auto flat = ValidateRegion(Region::Flat(kMax, kMax), shape, "t");
  CATCH_CHECK(
      std::string(flat.message()) ==
      "t: flat[9223372036854775807:9223372036854775807+9223372036854775807) is outside the 24 elements "
      "of a tensor of shape [4, 6]");
  CATCH_CHECK(!ValidateRegion(Region::Flat(1, kMax), shape, "t").ok());
  CATCH_CHECK(!ValidateRegion(Region::Flat(25, 0), shape, "t").ok());
  const auto box = ValidateRegion(Region::Box({2, 1}, {kMax, 2}), shape, "t");
  CATCH_CHECK(std::string(box.message()) ==
              "t: box [2:2+9223372036854775807, 1:3] exceeds dimension 0 of the global shape [4, 6]");
  CATCH_CHECK(!ValidateRegion(Region::Box({kMax, 0}, {kMax, 6}), shape, "t").ok());
  CATCH_CHECK(!ValidateRegion(Region::Box({0, 0}, {4, -6}), shape, "t").ok());
  CATCH_CHECK(ValidateRegion(Region::Box({4, 6}, {0, 0}), shape, "t").ok());  // empty, at the end
}
