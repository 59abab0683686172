// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes |
//   data | uint32 masked CRC-32C of data
// so a reader can tell a torn or corrupted record from a good one. Writing and reading.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::tensorboard {

// Bytes a record of `payload_size` bytes occupies in the file.
constexpr size_t FramedRecordSize(size_t payload_size) { return 8 + 4 + payload_size + 4; }

// Appends `payload`, framed as one record, to *out.
void AppendFramedRecord(std::string_view payload, std::string* out);

enum class FramedRead {
  kRecord,   // a whole record with both checksums right
  kEnd,      // no bytes left
  kTorn,     // fewer bytes left than the record needs: a writer stopped mid-record
  kCorrupt,  // a checksum does not match
};

// Reads the record that starts at `*offset` in `data`. On kRecord stores its payload (a view
// into `data`) and moves *offset past the record; otherwise leaves both unchanged.
FramedRead ReadFramedRecord(std::string_view data, size_t* offset, std::string_view* payload);

}  // namespace tessera::tensorboard
