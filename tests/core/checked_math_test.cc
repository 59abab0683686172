// Tests of core/checked_math: the overflow-checked sums and products that readers apply to sizes
// and offsets from files, at and just past the limits of their types.
#include "core/checked_math.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "tests/catch_compat.h"

using tessera::CheckedAdd;
using tessera::CheckedByteSize;
using tessera::CheckedMul;
using tessera::CheckedNumElements;
using tessera::CheckedSub;

CATCH_TEST_CASE("checked sums and products are exact or empty, never wrapped") {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  CATCH_CHECK(CheckedAdd<int64_t>(kMax - 1, 1) == kMax);
  CATCH_CHECK(!CheckedAdd<int64_t>(kMax, 1));
  CATCH_CHECK(!CheckedAdd<int64_t>(kMin, -1));
  CATCH_CHECK(CheckedSub<int64_t>(0, kMax) == -kMax);
  CATCH_CHECK(!CheckedSub<int64_t>(kMin, 1));
  CATCH_CHECK(!CheckedSub<uint64_t>(0, 1));
  CATCH_CHECK(CheckedMul<int64_t>(int64_t{1} << 31, int64_t{1} << 31) == int64_t{1} << 62);
  CATCH_CHECK(!CheckedMul<int64_t>(int64_t{1} << 32, int64_t{1} << 31));
  CATCH_CHECK(!CheckedMul<int64_t>(-1, kMin));
  CATCH_CHECK(CheckedMul<uint64_t>(uint64_t{1} << 63, 1) == uint64_t{1} << 63);
  CATCH_CHECK(!CheckedMul<uint64_t>(uint64_t{1} << 63, 2));
  CATCH_CHECK(!CheckedAdd<uint64_t>(~uint64_t{0}, 1));
  CATCH_CHECK(!CheckedMul<int32_t>(65536, 32768));
  CATCH_CHECK(CheckedMul<int32_t>(65536, 32767) == 65536 * 32767);
}

CATCH_TEST_CASE("CheckedNumElements counts elements and rejects negative or overflowing shapes") {
  CATCH_CHECK(CheckedNumElements(std::vector<int64_t>{}) == 1);
  CATCH_CHECK(CheckedNumElements(std::vector<int64_t>{3, 4, 5}) == 60);
  CATCH_CHECK(CheckedNumElements(std::vector<int64_t>{int64_t{1} << 31, int64_t{1} << 31}) == int64_t{1}
                                                                                                  << 62);
  CATCH_CHECK(!CheckedNumElements(std::vector<int64_t>{int64_t{1} << 32, int64_t{1} << 32}));
  CATCH_CHECK(!CheckedNumElements(std::vector<int64_t>{4, -1}));
  CATCH_CHECK(
      !CheckedNumElements(std::vector<int64_t>{-2, -3}));  // the product is positive, the dims are not
  // A zero dimension makes the count 0 even when the other dimensions' product overflows.
  CATCH_CHECK(CheckedNumElements(std::vector<int64_t>{int64_t{1} << 40, int64_t{1} << 40, 0}) == 0);
}

CATCH_TEST_CASE("CheckedByteSize fits the byte count of elements into int64") {
  CATCH_CHECK(CheckedByteSize(10, 4) == 40);
  CATCH_CHECK(CheckedByteSize(int64_t{1} << 60, 4) == int64_t{1} << 62);
  CATCH_CHECK(!CheckedByteSize(int64_t{1} << 61, 4));
  CATCH_CHECK(!CheckedByteSize(-1, 4));
  CATCH_CHECK(!CheckedByteSize(1, ~uint64_t{0}));
}
