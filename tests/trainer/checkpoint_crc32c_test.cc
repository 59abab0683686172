// Tests of trainer/checkpoint/crc32c: the published check value, incremental use, and the
// hardware path against the portable one.
#include "trainer/checkpoint/crc32c.h"

#include <random>
#include <string>
#include <vector>

#include "tests/catch_compat.h"

using tessera::checkpoint::Crc32c;
using tessera::checkpoint::Crc32cPortable;

CATCH_TEST_CASE("crc32c matches the standard check values") {
  // The CRC catalogue's check value for CRC-32C ("123456789") and RFC 3720's test vectors.
  const std::string check = "123456789";
  CATCH_CHECK(Crc32c(check.data(), check.size()) == 0xE3069283u);
  CATCH_CHECK(Crc32cPortable(check.data(), check.size()) == 0xE3069283u);
  const std::vector<unsigned char> zeros(32, 0), ones(32, 0xFF);
  CATCH_CHECK(Crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);
  CATCH_CHECK(Crc32c(ones.data(), ones.size()) == 0x62A8AB43u);
  CATCH_CHECK(Crc32c(nullptr, 0) == 0u);
}

CATCH_TEST_CASE("crc32c: incremental, hardware and portable agree on every length and alignment") {
  std::mt19937 rng(7);
  std::vector<unsigned char> data(4096 + 64);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  for (size_t offset : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4096}) {
      const uint32_t whole = Crc32c(data.data() + offset, n);
      CATCH_CHECK(whole == Crc32cPortable(data.data() + offset, n));
      const size_t half = n / 3;
      CATCH_CHECK(Crc32c(data.data() + offset + half, n - half, Crc32c(data.data() + offset, half)) == whole);
    }
  }
  // A single flipped bit changes the checksum.
  const uint32_t before = Crc32c(data.data(), 4096);
  data[1234] ^= 0x10;
  CATCH_CHECK(Crc32c(data.data(), 4096) != before);
}
