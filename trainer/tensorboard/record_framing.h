// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes |
//   data | uint32 masked CRC-32C of data
// so a reader can tell a torn or corrupted record from a good one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::tensorboard {

// Bytes a record of `payload_size` bytes occupies in the file.
constexpr size_t FramedRecordSize(size_t payload_size) { return 8 + 4 + payload_size + 4; }

// Appends `payload`, framed as one record, to *out.
void AppendFramedRecord(std::string_view payload, std::string* out);

}  // namespace tessera::tensorboard
