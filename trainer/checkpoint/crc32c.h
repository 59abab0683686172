// CRC-32C (Castagnoli polynomial, the checksum of iSCSI, ext4 and many storage formats) of the
// bytes of every saved tensor and blob. It uses the SSE4.2 crc32 instruction where the CPU has
// it (several GB/s) and a table-driven loop elsewhere; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tessera::checkpoint {

// The CRC-32C of `size` bytes continuing from `crc` (0 for a fresh checksum), so that
// Crc32c(b, n2, Crc32c(a, n1)) is the checksum of a followed by b.
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);

// The portable table-driven path alone (tests compare the two).
uint32_t Crc32cPortable(const void* data, size_t size, uint32_t crc = 0);

}  // namespace tessera::checkpoint
