// Fuzzes the TFRecord framing reader of TensorBoard event files
// (trainer/tensorboard/record_framing.cc): every record length comes from the file.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_file.h"
#include "trainer/tensorboard/record_framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file = tessera::fuzz::AsView(data, size);
  size_t offset = 0;
  std::string_view payload;
  while (tessera::tensorboard::ReadFramedRecord(file, &offset, &payload) ==
         tessera::tensorboard::FramedRead::kRecord) {
    if (payload.size() > file.size()) __builtin_trap();  // a payload can only be a view into the file
  }
  return 0;
}
