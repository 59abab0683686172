// TFRecord framing: fixed-width little-endian fields written byte by byte, so the output does
// not depend on the host's byte order.
#include "trainer/tensorboard/record_framing.h"

#include <cstdint>

#include "core/crc32c.h"

namespace tessera::tensorboard {
namespace {

void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFFu));
}

}  // namespace

void AppendFramedRecord(std::string_view payload, std::string* out) {
  out->reserve(out->size() + FramedRecordSize(payload.size()));
  const size_t length_at = out->size();
  AppendLittleEndian(payload.size(), 8, out);
  AppendLittleEndian(MaskCrc32c(Crc32c(std::string_view(*out).substr(length_at, 8))), 4, out);
  out->append(payload.data(), payload.size());
  AppendLittleEndian(MaskCrc32c(Crc32c(payload)), 4, out);
}

}  // namespace tessera::tensorboard
