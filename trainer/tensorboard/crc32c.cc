// CRC-32C with a 256-entry table built at compile time from the reflected polynomial.
#include "trainer/tensorboard/crc32c.h"

#include <array>

namespace tessera::tensorboard {
namespace {

// 0x1EDC6F41 with its bits reversed: the CRC is computed least significant bit first.
constexpr uint32_t kReflectedPolynomial = 0x82F63B78u;

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kReflectedPolynomial : 0u);
    table[byte] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = MakeTable();

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, std::string_view data) {
  // The register holds the complement between calls' bytes, so pre- and post-inversion make
  // extending a finished CRC the same as computing over the concatenation.
  uint32_t c = ~crc;
  for (unsigned char byte : data) c = kTable[(c ^ byte) & 0xFFu] ^ (c >> 8);
  return ~c;
}

}  // namespace tessera::tensorboard
