// Fuzzes the Hugging Face config.json reader (interop/hf_config.cc) and, beneath it, the JSON
// parser (core/json.cc).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_file.h"
#include "interop/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)tessera::checkpoint::ParseHfLlamaConfig(std::string(tessera::fuzz::AsView(data, size)),
                                                "fuzz/config.json");
  return 0;
}
