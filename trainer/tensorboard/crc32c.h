// CRC-32C (Castagnoli polynomial, the checksum of iSCSI, ext4 metadata and TFRecord files) and
// the masking that TFRecord framing applies to it. Table-driven, one byte per step: event files
// hold a few hundred bytes per logged step, so speed does not matter here.
#pragma once

#include <cstdint>
#include <string_view>

namespace tessera::tensorboard {

// CRC-32C of `data` continued from `crc`, the CRC-32C of everything before it (0 to start).
// Crc32cExtend(Crc32c(a), b) == Crc32c(a + b).
uint32_t Crc32cExtend(uint32_t crc, std::string_view data);
inline uint32_t Crc32c(std::string_view data) { return Crc32cExtend(0, data); }

// TFRecord stores CRCs rotated and offset, because a CRC computed over bytes that themselves
// contain CRCs is weak: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
constexpr uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
constexpr uint32_t UnmaskCrc32c(uint32_t masked) {
  const uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

}  // namespace tessera::tensorboard
