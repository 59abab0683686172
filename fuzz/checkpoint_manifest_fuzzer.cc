// Fuzzes the checkpoint manifest parser and validator (checkpoint/manifest.cc). Each input is
// tried twice: as it is, and with a correct CRC-32C trailer appended, so that the fuzzer also
// reaches the validation behind the manifest's checksum.
#include <cstddef>
#include <cstdint>
#include <string>

#include "checkpoint/manifest.h"
#include "core/crc32c.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(tessera::fuzz::AsView(data, size));
  (void)tessera::checkpoint::ParseManifest(bytes, "fuzz/manifest.pb");
  const uint32_t crc = tessera::Crc32c(bytes);
  bytes.push_back(static_cast<char>((12 << 3) | 5));  // Manifest.manifest_crc32c, fixed32
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  auto manifest = tessera::checkpoint::ParseManifest(bytes, "fuzz/manifest.pb");
  if (manifest.ok()) {
    // What a reader does next: find tensors and blobs, and re-serialize for a rewrite.
    for (const auto& t : manifest->tensors) (void)manifest->FindTensor(t.name);
    for (const auto& b : manifest->blobs) (void)manifest->FindBlob(b.name);
    (void)tessera::checkpoint::SerializeManifest(*manifest);
  }
  return 0;
}
