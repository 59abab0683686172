// Fuzzes the checkpoint shard file header check (checkpoint/shard_file.cc). Each input is tried
// as it is and with the header's CRC-32C (bytes 32-35, over bytes 0-31) made right, so that the
// checks behind the checksum are reached too.
#include <cstddef>
#include <cstdint>
#include <string>

#include "checkpoint/shard_file.h"
#include "core/crc32c.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(tessera::fuzz::AsView(data, size));
  (void)tessera::checkpoint::ReadShardFileHeader(tessera::fuzz::WriteScratchFile("shard-00000.bin", bytes));
  if (bytes.size() >= 36) {
    const uint32_t crc = tessera::Crc32c(bytes.data(), 32);
    for (int i = 0; i < 4; ++i) bytes[32 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
    (void)tessera::checkpoint::ReadShardFileHeader(tessera::fuzz::WriteScratchFile("shard-00000.bin", bytes));
  }
  return 0;
}
