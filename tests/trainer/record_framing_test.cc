// Tests of trainer/tensorboard/record_framing: byte-exact records against bytes that
// TensorBoard's own Python framing code produced, and appending after existing content.
#include "trainer/tensorboard/record_framing.h"

#include <string>

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
