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

uint64_t ReadLittleEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = bytes.size(); i-- > 0;) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
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

FramedRead ReadFramedRecord(std::string_view data, size_t* offset, std::string_view* payload) {
  if (*offset >= data.size()) return FramedRead::kEnd;
  const std::string_view rest = data.substr(*offset);
  if (rest.size() < FramedRecordSize(0)) return FramedRead::kTorn;
  const std::string_view length_bytes = rest.substr(0, 8);
  if (ReadLittleEndian(rest.substr(8, 4)) != MaskCrc32c(Crc32c(length_bytes))) return FramedRead::kCorrupt;
  const uint64_t length = ReadLittleEndian(length_bytes);
  if (length > rest.size() - FramedRecordSize(0)) return FramedRead::kTorn;
  const std::string_view data_bytes = rest.substr(12, length);
  if (ReadLittleEndian(rest.substr(12 + length, 4)) != MaskCrc32c(Crc32c(data_bytes))) {
    return FramedRead::kCorrupt;
  }
  *payload = data_bytes;
  *offset += FramedRecordSize(length);
  return FramedRead::kRecord;
}

}  // namespace tessera::tensorboard
