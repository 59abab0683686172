// Tests of core/hash: SplitMix64 against reference outputs. The values for seed 1234567 are the
// published ones of Rosetta Code's "Pseudo-random numbers/Splitmix64" task; the first one for
// seed 0 (0xe220a8397b1dcdaf) is the commonly quoted first output of Vigna's splitmix64.c seeded
// with 0. All of them were recomputed independently from the definition with Python integers:
//   s = (s + 0x9e3779b97f4a7c15) % 2**64; z = s
//   z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) % 2**64
//   z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) % 2**64; output z ^ (z >> 31)
#include "core/hash.h"

#include <cstdint>

#include "tests/catch_compat.h"

using tessera::SplitMix64;
using tessera::SplitMix64Finalize;
using tessera::SplitMix64Hash;

CATCH_TEST_CASE("SplitMix64 seeded with 0 gives the reference outputs") {
  SplitMix64 rng(0);
  CATCH_CHECK(rng.Next() == 0xe220a8397b1dcdafull);
  CATCH_CHECK(rng.Next() == 0x6e789e6aa1b965f4ull);
  CATCH_CHECK(rng.Next() == 0x06c45d188009454full);
  CATCH_CHECK(rng.Next() == 0xf88bb8a8724c81ecull);
  CATCH_CHECK(rng.Next() == 0x1b39896a51a8749bull);
}

CATCH_TEST_CASE("SplitMix64 seeded with 1234567 gives the reference outputs") {
  SplitMix64 rng(1234567);
  CATCH_CHECK(rng.Next() == 6457827717110365317ull);
  CATCH_CHECK(rng.Next() == 3203168211198807973ull);
  CATCH_CHECK(rng.Next() == 9817491932198370423ull);
  CATCH_CHECK(rng.Next() == 4593380528125082431ull);
  CATCH_CHECK(rng.Next() == 16408922859458223821ull);
}

CATCH_TEST_CASE("the hash of x is the first output of the generator seeded with x") {
  for (uint64_t x : {uint64_t{0}, uint64_t{1234567}, ~uint64_t{0}}) {
    SplitMix64 rng(x);
    CATCH_CHECK(SplitMix64Hash(x) == rng.Next());
  }
  static_assert(SplitMix64Hash(0) == 0xe220a8397b1dcdafull, "usable at compile time");
  CATCH_CHECK(SplitMix64Finalize(0) == 0);  // the finalizer fixes zero
}

CATCH_TEST_CASE("unit draws lie in [0, 1) and use the top 53 bits") {
  SplitMix64 rng(0);
  const double u = rng.NextUnit();
  CATCH_CHECK(u == static_cast<double>(0xe220a8397b1dcdafull >> 11) / 9007199254740992.0);
  for (int i = 0; i < 1000; ++i) {
    const double v = rng.NextUnit();
    CATCH_CHECK((v >= 0.0 && v < 1.0));
  }
}
