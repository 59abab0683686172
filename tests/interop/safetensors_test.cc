// Tests of trainer/checkpoint/safetensors: round trip of several dtypes (bytes, shapes, metadata,
// 8-byte alignment of the data), and the reader's validation of damaged or hostile files, each
// error naming the file. (tests/interop/hf_interop_test.py checks the files against the Python
// safetensors package both ways.)
#include "interop/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;
namespace fs = std::filesystem;

namespace {

std::string Bytes(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed) & 0xFF);
  return s;
}

// A safetensors file with a hand-written header and `data_bytes` of data.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes,
              uint64_t declared_len = 0) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t n = declared_len ? declared_len : header.size();
  for (int i = 0; i < 8; ++i, n >>= 8) out.put(static_cast<char>(n & 0xFF));
  out << header << std::string(data_bytes, '\0');
}

std::string OpenError(const std::string& path) {
  auto r = SafetensorsReader::Open(path);
  return r.ok() ? "" : std::string(r.status().message());
}

}  // namespace

CATCH_TEST_CASE("safetensors round trip: dtypes, shapes, metadata, aligned data") {
  TempDir dir("st");
  const std::string path = dir.path() + "/model.safetensors";
  std::vector<SafetensorsTensor> declared = {{"a.weight", DType::kFloat32, {3, 4}},
                                             {"b", DType::kBFloat16, {5}},
                                             {"c", DType::kInt64, {2, 1, 2}},
                                             {"scalar", DType::kFloat16, {}},
                                             {"empty", DType::kFloat32, {0, 4}}};
  std::vector<std::string> data;
  {
    auto w = SafetensorsWriter::Create(path, declared, {{"format", "pt"}, {"note", "a \"quoted\" value"}});
    CATCH_REQUIRE(w.ok());
    int seed = 0;
    for (const SafetensorsTensor& t : (*w)->tensors()) {
      data.push_back(Bytes(t.byte_size(), seed++));
      CATCH_REQUIRE((*w)->Append(data.back().data(), data.back().size()).ok());
    }
    CATCH_REQUIRE((*w)->Finish().ok());
  }
  auto r = SafetensorsReader::Open(path);
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK((*r)->metadata() == std::vector<std::pair<std::string, std::string>>{
                                      {"format", "pt"}, {"note", "a \"quoted\" value"}});
  CATCH_REQUIRE((*r)->tensors().size() == declared.size());
  for (size_t i = 0; i < declared.size(); ++i) {
    const SafetensorsTensor* t = (*r)->Find(declared[i].name);
    CATCH_REQUIRE(t != nullptr);
    CATCH_CHECK(t->dtype == declared[i].dtype);
    CATCH_CHECK(t->shape == declared[i].shape);
    std::string back(t->byte_size(), '\0');
    CATCH_REQUIRE((*r)->Read(*t, back.data(), back.size()).ok());
    CATCH_CHECK(back == data[i]);
  }
  // The header is padded so the data section starts at a multiple of 8.
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | len[i];
  CATCH_CHECK((8 + header_len) % 8 == 0);
  // Appending too much or too little is refused.
  auto w = SafetensorsWriter::Create(dir.path() + "/x.safetensors", {{"t", DType::kFloat32, {2}}}, {});
  CATCH_CHECK(!(*w)->Append("abc", 3).ok());
  CATCH_CHECK(!(*w)->Finish().ok());
}

CATCH_TEST_CASE("safetensors reader rejects damaged files, naming them") {
  TempDir dir("stbad");
  const std::string p = dir.path() + "/bad.safetensors";
  // Header length beyond the file.
  WriteRaw(p, "{}", 0, 1000);
  CATCH_CHECK(OpenError(p).find("'" + p + "' is not a valid safetensors file: header length 1000") !=
              std::string::npos);
  // Offsets beyond the data (a truncated file).
  WriteRaw(p, R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  CATCH_CHECK(OpenError(p).find("outside the 8 data bytes") != std::string::npos);
  // Byte count that does not match dtype x shape.
  WriteRaw(p, R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 12);
  CATCH_CHECK(OpenError(p).find("has 12 bytes; 4 F32 elements need 16") != std::string::npos);
  // A gap, and an overlap.
  WriteRaw(
      p,
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
      5);
  CATCH_CHECK(OpenError(p).find("tile the data") != std::string::npos);
  WriteRaw(
      p,
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
      4);
  CATCH_CHECK(OpenError(p).find("tile the data") != std::string::npos);
  // Trailing bytes no tensor covers.
  WriteRaw(p, R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 6);
  CATCH_CHECK(OpenError(p).find("cover 2 of the 6 data bytes") != std::string::npos);
  // Unknown dtype, malformed JSON, negative sizes, too short a file.
  WriteRaw(p, R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2);
  CATCH_CHECK(OpenError(p).find("unsupported safetensors dtype 'F8_E4M3'") != std::string::npos);
  WriteRaw(p, R"({"a":)", 0);
  CATCH_CHECK(OpenError(p).find("header:") != std::string::npos);
  WriteRaw(p, R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,0]}})", 0);
  CATCH_CHECK(OpenError(p).find("not a non-negative integer") != std::string::npos);
  { std::ofstream(p, std::ios::binary | std::ios::trunc) << "abc"; }
  CATCH_CHECK(OpenError(p).find("fewer than the 8-byte header length") != std::string::npos);
  CATCH_CHECK(OpenError(dir.path() + "/missing.safetensors").find("missing.safetensors") !=
              std::string::npos);
  // A well-formed hand-written file reads.
  WriteRaw(p, R"({"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2);
  CATCH_CHECK(OpenError(p).empty());
}

CATCH_TEST_CASE("safetensors reader refuses hostile headers before allocating") {
  TempDir dir("sthostile");
  const std::string p = dir.path() + "/hostile.safetensors";
  // A header length of 2^63, and one just above the format's 100 MB limit in a file that is not
  // that long: both refused from the 8 length bytes alone.
  WriteRaw(p, "{}", 0, uint64_t{1} << 63);
  CATCH_CHECK(OpenError(p).find("'" + p +
                                "' is not a valid safetensors file: header length 9223372036854775808 "
                                "(the 8 bytes at offset 0) exceeds the 100000000-byte limit") !=
              std::string::npos);
  WriteRaw(p, "{}", 0, 100'000'001);
  CATCH_CHECK(OpenError(p).find("exceeds the 100000000-byte limit") != std::string::npos);
  WriteRaw(p, "{}", 0, ~uint64_t{0});
  CATCH_CHECK(OpenError(p).find("exceeds the 100000000-byte limit") != std::string::npos);
  // Shapes whose element count wraps around to 0 in 64 bits (2^32 x 2^32), or whose byte count
  // does (2^62 F32 elements = 2^64 bytes): without the checks both match data_offsets [0, 0].
  WriteRaw(p, R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
  CATCH_CHECK(OpenError(p).find("tensor 't' has shape [4294967296, 4294967296]: its F32 bytes do not fit in "
                                "64 bits") != std::string::npos);
  WriteRaw(p, R"({"t":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})", 0);
  CATCH_CHECK(OpenError(p).find("its F32 bytes do not fit in 64 bits") != std::string::npos);
  WriteRaw(p, R"({"t":{"dtype":"U8","shape":[9007199254740992,9007199254740992,0],"data_offsets":[0,0]}})",
           0);
  CATCH_CHECK(OpenError(p).empty());  // a zero dimension: no elements, whatever the others
  // Dimensions that are not integers, or beyond 2^53 (not exact in JSON's doubles).
  for (const char* dim : {"1.5", "1e300", "\"4\"", "9007199254740993000"}) {
    WriteRaw(p, std::string(R"({"t":{"dtype":"U8","shape":[)") + dim + R"(],"data_offsets":[0,0]}})", 0);
    CATCH_CHECK(OpenError(p).find("tensor 't': a shape entry is not a non-negative integer") !=
                std::string::npos);
  }
  // Offsets: end before begin, end past the data, offsets that are not integers.
  WriteRaw(p, R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 4);
  CATCH_CHECK(OpenError(p).find("tensor 't' has data_offsets [4, 2] outside the 4 data bytes") !=
              std::string::npos);
  WriteRaw(p, R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[9007199254740990,9007199254740992]}})", 4);
  CATCH_CHECK(OpenError(p).find("outside the 4 data bytes") != std::string::npos);
  WriteRaw(p, R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,-2]}})", 2);
  CATCH_CHECK(OpenError(p).find("data_offsets[1] is not a non-negative integer") != std::string::npos);
  // Two tensors of one name (the second would shadow the first for Find).
  WriteRaw(
      p,
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
      4);
  CATCH_CHECK(OpenError(p).find("tensor 'a' appears twice in the header") != std::string::npos);
  // Tensors listed out of order are fine as long as they tile the data.
  WriteRaw(
      p,
      R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
      4);
  CATCH_CHECK(OpenError(p).empty());
}
