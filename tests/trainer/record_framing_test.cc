// Tests of trainer/tensorboard/record_framing: byte-exact records against bytes that
// TensorBoard's own Python framing code produced, and appending after existing content.
#include "trainer/tensorboard/record_framing.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "core/crc32c.h"
#include "tests/catch_compat.h"

using tessera::tensorboard::AppendFramedRecord;
using tessera::tensorboard::FramedRecordSize;

namespace {

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

}  // namespace

CATCH_TEST_CASE("record framing equals TensorBoard's bytes") {
  // struct.pack("<Q", n) + masked_crc32c(that) + payload + masked_crc32c(payload), computed with
  // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
  std::string empty, hello;
  AppendFramedRecord("", &empty);
  AppendFramedRecord("hello", &hello);
  CATCH_CHECK(Hex(empty) == "000000000000000029039807d8ea82a2");
  CATCH_CHECK(Hex(hello) == "0500000000000000eab2043e68656c6c6fbb1f1c19");
  CATCH_CHECK(hello.size() == FramedRecordSize(5));
}

CATCH_TEST_CASE("record framing appends after existing bytes") {
  std::string out = "prefix";
  AppendFramedRecord("hello", &out);
  AppendFramedRecord("", &out);
  CATCH_CHECK(out.size() == 6 + FramedRecordSize(5) + FramedRecordSize(0));
  CATCH_CHECK(Hex(out.substr(6)) ==
              "0500000000000000eab2043e68656c6c6fbb1f1c19000000000000000029039807d8ea82a2");
}

CATCH_TEST_CASE("records read back as written; a torn or corrupted record is told apart") {
  using tessera::tensorboard::FramedRead;
  using tessera::tensorboard::ReadFramedRecord;
  std::string file;
  AppendFramedRecord("hello", &file);
  AppendFramedRecord("", &file);
  AppendFramedRecord("world!", &file);
  size_t offset = 0;
  std::string_view payload;
  CATCH_CHECK(ReadFramedRecord(file, &offset, &payload) == FramedRead::kRecord);
  CATCH_CHECK(payload == "hello");
  CATCH_CHECK(ReadFramedRecord(file, &offset, &payload) == FramedRead::kRecord);
  CATCH_CHECK(payload.empty());
  CATCH_CHECK(ReadFramedRecord(file, &offset, &payload) == FramedRead::kRecord);
  CATCH_CHECK(payload == "world!");
  CATCH_CHECK(offset == file.size());
  CATCH_CHECK(ReadFramedRecord(file, &offset, &payload) == FramedRead::kEnd);

  // Cut anywhere inside the last record: torn, and the offset stays at the record's start.
  const size_t last = FramedRecordSize(5) + FramedRecordSize(0);
  for (size_t cut = last + 1; cut < file.size(); ++cut) {
    size_t at = last;
    CATCH_CHECK(ReadFramedRecord(std::string_view(file).substr(0, cut), &at, &payload) == FramedRead::kTorn);
    CATCH_CHECK(at == last);
  }
  // A flipped bit in the length, its checksum, the data or the data's checksum.
  for (size_t byte : {size_t{0}, size_t{9}, size_t{13}, FramedRecordSize(5) - 1}) {
    std::string bad = file;
    bad[byte] = static_cast<char>(bad[byte] ^ 0x10);
    size_t at = 0;
    CATCH_CHECK(ReadFramedRecord(bad, &at, &payload) == FramedRead::kCorrupt);
    CATCH_CHECK(at == 0);
  }
}

CATCH_TEST_CASE("a record length from the file is bounded by the bytes that remain, before any use") {
  using tessera::Crc32c;
  using tessera::MaskCrc32c;
  using tessera::tensorboard::FramedRead;
  using tessera::tensorboard::ReadFramedRecord;
  // Records whose length field (with a matching checksum, so only the bound stops them) claims
  // 2^63, 2^64 - 1, or one byte more than the file holds.
  for (uint64_t length : {uint64_t{1} << 63, ~uint64_t{0}, ~uint64_t{0} - 15, uint64_t{6}}) {
    CATCH_CAPTURE(length);
    std::string file;
    for (int i = 0; i < 8; ++i) file.push_back(static_cast<char>(length >> (8 * i)));
    const uint32_t crc = MaskCrc32c(Crc32c(file));
    for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>(crc >> (8 * i)));
    file += "hello";
    for (int i = 0; i < 4; ++i) file.push_back('\0');
    size_t offset = 0;
    std::string_view payload;
    CATCH_CHECK(ReadFramedRecord(file, &offset, &payload) == FramedRead::kTorn);
    CATCH_CHECK(offset == 0);
    // After a good record, too: the bound is what remains from the offset, not the file size.
    std::string two;
    AppendFramedRecord("first", &two);
    two += file;
    offset = 0;
    CATCH_CHECK(ReadFramedRecord(two, &offset, &payload) == FramedRead::kRecord);
    CATCH_CHECK(ReadFramedRecord(two, &offset, &payload) == FramedRead::kTorn);
    CATCH_CHECK(offset == FramedRecordSize(5));
  }
}
