// CRC-32C (Castagnoli polynomial, the checksum of iSCSI, ext4 and many storage formats): of the
// bytes of every saved checkpoint tensor and blob, and (masked) of every TensorBoard record. It uses the
// SSE4.2 crc32 instruction where the CPU has it (several GB/s) and a table-driven loop elsewhere; both give
// the same value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tessera {

// The CRC-32C of `size` bytes continuing from `crc` (0 for a fresh checksum), so that
// Crc32c(b, n2, Crc32c(a, n1)) is the checksum of a followed by b.
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);

// The portable table-driven path alone (tests compare the two).
uint32_t Crc32cPortable(const void* data, size_t size, uint32_t crc = 0);

inline uint32_t Crc32c(std::string_view data, uint32_t crc = 0) {
  return Crc32c(data.data(), data.size(), crc);
}

// TFRecord's masking (TensorBoard event files): a rotation plus a constant, so that a CRC stored
// inside checksummed data does not checksum to a fixed value.
constexpr uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
constexpr uint32_t UnmaskCrc32c(uint32_t masked) {
  const uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

}  // namespace tessera
