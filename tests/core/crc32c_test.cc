// Tests of core/crc32c: the published check value and the iSCSI vectors, incremental use, the
// hardware path against the portable one and both against a bit-by-bit reference, and TFRecord
// masking.
#include "core/crc32c.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/catch_compat.h"

using tessera::Crc32c;
using tessera::Crc32cPortable;
using tessera::MaskCrc32c;
using tessera::UnmaskCrc32c;

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

namespace {

// CRC-32C one bit at a time, straight from the definition (reflected polynomial 0x82F63B78).
uint32_t BitwiseCrc32c(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

}  // namespace

CATCH_TEST_CASE("crc32c (string view) check value of \"123456789\" is 0xE3069283") {
  CATCH_CHECK(Crc32c("123456789") == 0xE3069283u);
  CATCH_CHECK(Crc32c("") == 0u);
}

CATCH_TEST_CASE("crc32c (string view) matches the iSCSI test vectors of RFC 3720 B.4") {
  std::string zeros(32, '\0'), ones(32, '\xFF'), up(32, '\0'), down(32, '\0');
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<char>(i);
    down[i] = static_cast<char>(31 - i);
  }
  CATCH_CHECK(Crc32c(zeros) == 0x8A9136AAu);
  CATCH_CHECK(Crc32c(ones) == 0x62A8AB43u);
  CATCH_CHECK(Crc32c(up) == 0x46DD794Eu);
  CATCH_CHECK(Crc32c(down) == 0x113FDB5Cu);
  // The portable path on the same vectors (Crc32c takes the SSE4.2 path where the CPU has it).
  CATCH_CHECK(Crc32cPortable(zeros.data(), zeros.size()) == 0x8A9136AAu);
  CATCH_CHECK(Crc32cPortable(ones.data(), ones.size()) == 0x62A8AB43u);
  CATCH_CHECK(Crc32cPortable(up.data(), up.size()) == 0x46DD794Eu);
  CATCH_CHECK(Crc32cPortable(down.data(), down.size()) == 0x113FDB5Cu);
}

CATCH_TEST_CASE("crc32c agrees with a bitwise reference and extends across any split") {
  std::mt19937 rng(7);
  for (int length : {1, 2, 7, 8, 9, 63, 64, 65, 1000}) {
    std::string data(length, '\0');
    for (char& c : data) c = static_cast<char>(rng() & 0xFF);
    const uint32_t whole = Crc32c(data);
    CATCH_CHECK(whole == BitwiseCrc32c(data));
    for (int split = 0; split <= length; split += 1 + length / 5) {
      CATCH_CHECK(Crc32c(data.substr(split), Crc32c(data.substr(0, split))) == whole);
    }
  }
}

CATCH_TEST_CASE("crc32c masking is TFRecord's and inverts") {
  CATCH_CHECK(MaskCrc32c(0) == 0xa282ead8u);
  // TensorBoard's own Python masked_crc32c(b"123456789").
  CATCH_CHECK(MaskCrc32c(Crc32c("123456789")) == 0xC78AB0E5u);
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u, 0x12345678u}) {
    CATCH_CHECK(UnmaskCrc32c(MaskCrc32c(crc)) == crc);
  }
}
