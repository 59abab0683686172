// Fuzzes the safetensors reader (interop/safetensors.cc): the input is the whole file (8-byte
// header length, JSON header, data). Every tensor the header admits is read back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_file.h"
#include "interop/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::WriteScratchFile("x.safetensors", tessera::fuzz::AsView(data, size));
  auto reader = tessera::checkpoint::SafetensorsReader::Open(path);
  if (!reader.ok()) return 0;
  std::vector<char> buffer;
  for (const auto& tensor : (*reader)->tensors()) {
    if (tensor.byte_size() > (1u << 20)) continue;
    buffer.resize(tensor.byte_size());
    (void)(*reader)->Read(tensor, buffer.data(), buffer.size());
    (void)(*reader)->Find(tensor.name);
  }
  return 0;
}
