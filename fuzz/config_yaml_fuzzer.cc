// Fuzzes the YAML training config (config/config.cc): any text must give a Config or an error
// naming the key and line, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(tessera::fuzz::AsView(data, size));
  auto config = tessera::ConfigFromYamlString(yaml, "fuzz.yaml");
  if (config.ok()) {
    (void)tessera::ValidateParallelConfig(*config);
    // What a resumed run does with the config it saved: print it and read it back.
    (void)tessera::ConfigFromYamlString(tessera::ConfigToYaml(*config), "fuzz.yaml (round trip)");
  }
  return 0;
}
