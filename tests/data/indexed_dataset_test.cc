// Tests of data/indexed_dataset: FORMATS.md's byte-exact test vector, reading hand-made files,
// the streaming writer, and the reader's checks: truncated .bin, .idx sizes that disagree with
// the .bin, unknown dtype codes, and randomized corruption (never a crash, never a read outside
// the files; either a clear error or data that passes every check).
#include "data/indexed_dataset.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "tests/catch_compat.h"
#include "tests/data/data_test_util.h"

namespace tessera::data {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

const std::vector<std::vector<int32_t>> kDocs = {{1, 2, 3, 50256}, {4, 5, 50256}, {65000, 50256}};
const char kBinHex[] = "01000200030050c40400050050c4e8fd50c4";
const char kIdxHex[] =
    "4d4d4944494458000001000000000000000803000000000000000400000000000000040000000300000002000000000000"
    "000000000008000000000000000e000000000000000000000000000000010000000000000002000000000000000300000000"
    "000000";

CATCH_TEST_CASE("encoding FORMATS.md's documents gives its bytes exactly") {
  std::string bin, idx;
  EncodeIndexedDataset(kDocs, TokenDType::kUint16, &bin, &idx);
  CATCH_CHECK(absl::BytesToHexString(bin) == kBinHex);
  CATCH_CHECK(absl::BytesToHexString(idx) == kIdxHex);
  CATCH_CHECK(idx.size() == 102);
}

CATCH_TEST_CASE("the writer streams the same bytes, and the reader gives the documents back") {
  TempDir dir;
  auto writer = IndexedDatasetWriter::Create(dir / "w", TokenDType::kUint16);
  CATCH_REQUIRE(writer.ok());
  for (const auto& d : kDocs) CATCH_REQUIRE((*writer)->AddDocument(d).ok());
  CATCH_CHECK(!testing::ReadFile(dir / "w.idx").size());  // nothing published before Finish
  CATCH_REQUIRE((*writer)->Finish().ok());
  CATCH_CHECK(absl::BytesToHexString(ReadFile(dir / "w.bin")) == kBinHex);
  CATCH_CHECK(absl::BytesToHexString(ReadFile(dir / "w.idx")) == kIdxHex);
  // uint16 cannot hold 70000.
  auto small = IndexedDatasetWriter::Create(dir / "s", TokenDType::kUint16);
  CATCH_CHECK(!(*small)->AddDocument(std::vector<int32_t>{70000}).ok());
}

CATCH_TEST_CASE("a hand-made Megatron file reads back document by document") {
  TempDir dir;
  WriteFile(dir / "m.bin", absl::HexStringToBytes(kBinHex));
  WriteFile(dir / "m.idx", absl::HexStringToBytes(kIdxHex));
  auto ds = IndexedDataset::Open(dir / "m");
  CATCH_REQUIRE(ds.ok());
  CATCH_CHECK((*ds)->num_documents() == 3);
  CATCH_CHECK((*ds)->total_tokens() == 9);
  for (int d = 0; d < 3; ++d) {
    const int64_t s = (*ds)->document_index(d);
    std::vector<int32_t> tokens((*ds)->sequence_length(s));
    CATCH_REQUIRE((*ds)->ReadTokens((*ds)->sequence_start(s), tokens.size(), tokens.data()).ok());
    CATCH_CHECK(tokens == kDocs[d]);
  }
  std::vector<int32_t> out(3);
  CATCH_CHECK(!(*ds)->ReadTokens(8, 2, out.data()).ok());  // past the end
}

CATCH_TEST_CASE("int32 files and Megatron's multi-sequence documents read correctly") {
  TempDir dir;
  std::string bin, idx;
  EncodeIndexedDataset({{100000, 7}, {8}, {9, 10, 11}}, TokenDType::kInt32, &bin, &idx);
  // Make documents of sequences: doc 0 = sequences 0..1, doc 1 = sequence 2.
  const int64_t d = 3;
  std::memcpy(&idx[26], &d, 8);
  idx.resize(34 + 12 * 3);
  for (int64_t v : {int64_t{0}, int64_t{2}, int64_t{3}}) idx.append(reinterpret_cast<const char*>(&v), 8);
  WriteFile(dir / "i.bin", bin);
  WriteFile(dir / "i.idx", idx);
  auto ds = IndexedDataset::Open(dir / "i");
  CATCH_REQUIRE(ds.ok());
  CATCH_CHECK((*ds)->num_documents() == 2);
  std::vector<int32_t> tokens(3);
  CATCH_REQUIRE((*ds)->ReadTokens(0, 3, tokens.data()).ok());
  CATCH_CHECK(tokens == std::vector<int32_t>{100000, 7, 8});
}

absl::Status OpenBytes(const TempDir& dir, const std::string& bin, const std::string& idx) {
  WriteFile(dir / "c.bin", bin);
  WriteFile(dir / "c.idx", idx);
  return IndexedDataset::Open(dir / "c").status();
}

CATCH_TEST_CASE("corrupt files are errors that say where and what was expected") {
  TempDir dir;
  const std::string bin = absl::HexStringToBytes(kBinHex), idx = absl::HexStringToBytes(kIdxHex);
  auto message = [&](const std::string& b, const std::string& i) {
    return std::string(OpenBytes(dir, b, i).message());
  };
  CATCH_CHECK(OpenBytes(dir, bin, idx).ok());
  CATCH_CHECK(message(bin.substr(0, 17), idx).find("truncated .bin") != std::string::npos);
  CATCH_CHECK(message(bin + "xx", idx).find("has 20 bytes") != std::string::npos);
  std::string bad_dtype = idx;
  bad_dtype[17] = 9;
  CATCH_CHECK(message(bin, bad_dtype).find("byte offset 17: unknown dtype code 9") != std::string::npos);
  std::string float_dtype = idx;
  float_dtype[17] = 7;
  CATCH_CHECK(message(bin, float_dtype).find("not an integer type") != std::string::npos);
  std::string bad_magic = idx;
  bad_magic[0] = 'X';
  CATCH_CHECK(message(bin, bad_magic).find("magic") != std::string::npos);
  std::string bad_version = idx;
  bad_version[9] = 2;
  CATCH_CHECK(message(bin, bad_version).find("version 2") != std::string::npos);
  CATCH_CHECK(message(bin, idx.substr(0, 101)).find("need a file of") != std::string::npos);
  std::string bad_size = idx;
  bad_size[34] = 5;  // first sequence 5 tokens long instead of 4
  CATCH_CHECK(message(bin, bad_size).find("sequence 1 starts at .bin byte 8, expected 10") !=
              std::string::npos);
  std::string bad_doc = idx;
  bad_doc[34 + 12 * 3 + 8] = 7;  // document index 1 = 7 > S
  CATCH_CHECK(message(bin, bad_doc).find("document index 1") != std::string::npos);
  CATCH_CHECK(!IndexedDataset::Open(dir / "absent").ok());
}

CATCH_TEST_CASE("hostile counts and lengths are refused without overflow") {
  TempDir dir;
  const std::string bin = absl::HexStringToBytes(kBinHex), idx = absl::HexStringToBytes(kIdxHex);
  auto message = [&](const std::string& b, const std::string& i) {
    return std::string(OpenBytes(dir, b, i).message());
  };
  auto put64 = [](std::string* s, size_t at, uint64_t v) {
    for (int k = 0; k < 8; ++k) (*s)[at + k] = static_cast<char>(v >> (8 * k));
  };
  // 2^62 sequences and 1 document entry: 34 + 12 * 2^62 + 8 wraps around to 42 in 64 bits, the
  // length of this file.
  std::string wraps = idx.substr(0, 34) + std::string(8, '\0');
  put64(&wraps, 18, uint64_t{1} << 62);
  put64(&wraps, 26, 1);
  CATCH_CHECK(
      message("", wraps).find("c.idx: sequence count 4611686018427387904 (byte offset 18) and document "
                              "count + 1 = 1 (byte offset 26) need a file of") != std::string::npos);
  // A count of 2^64 - 1.
  std::string max_count = idx;
  put64(&max_count, 18, ~uint64_t{0});
  CATCH_CHECK(message(bin, max_count).find("need a file of") != std::string::npos);
  // A sequence length of 2^31 - 1 tokens: the sequences would end far past the 18-byte .bin.
  std::string long_seq = idx;
  for (int k = 0; k < 4; ++k) long_seq[34 + k] = k == 3 ? '\x7f' : '\xff';
  CATCH_CHECK(message(bin, long_seq)
                  .find("c.idx: byte offset 34: sequence 0 of 2147483647 tokens ends at .bin "
                        "byte 4294967294, past the 18 bytes of ") != std::string::npos);
  // Reads whose end does not fit int64 are out of range, not wrapped into range.
  CATCH_REQUIRE(OpenBytes(dir, bin, idx).ok());
  auto ds = IndexedDataset::Open(dir / "c");
  CATCH_REQUIRE(ds.ok());
  int32_t out[4];
  const absl::Status far = (*ds)->ReadTokens(INT64_MAX, INT64_MAX, out);
  CATCH_CHECK(far.code() == absl::StatusCode::kOutOfRange);
  CATCH_CHECK(std::string(far.message())
                  .find("9223372036854775807 tokens from token 9223372036854775807 are "
                        "outside its 9 tokens") != std::string::npos);
  CATCH_CHECK(!(*ds)->ReadTokens(1, INT64_MAX, out).ok());
  CATCH_CHECK(!(*ds)->ReadTokens(10, 0, out).ok());
  CATCH_CHECK((*ds)->ReadTokens(9, 0, out).ok());
}

CATCH_TEST_CASE("randomized corruption never crashes and never yields out-of-bounds reads") {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs;
  std::mt19937 rng(7);
  for (int d = 0; d < 20; ++d) {
    docs.emplace_back(1 + rng() % 30);
    for (auto& t : docs.back()) t = static_cast<int32_t>(rng() % 60000);
  }
  std::string bin, idx;
  EncodeIndexedDataset(docs, TokenDType::kUint16, &bin, &idx);
  int opened = 0, rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string b = bin, i = idx;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      i[rng() % i.size()] ^= static_cast<char>(1 + rng() % 255);
    } else if (kind == 1) {
      i.resize(rng() % i.size());
    } else if (kind == 2) {
      b.resize(rng() % b.size());
    } else {
      for (int k = 0; k < 4; ++k) i[34 + rng() % (i.size() - 34)] = static_cast<char>(rng());
    }
    WriteFile(dir / "f.bin", b);
    WriteFile(dir / "f.idx", i);
    auto ds = IndexedDataset::Open(dir / "f");
    if (!ds.ok()) {
      ++rejected;
      CATCH_CHECK(!ds.status().message().empty());
      continue;
    }
    ++opened;
    // Whatever opened must be self-consistent: every document readable within the file.
    for (int64_t d = 0; d < (*ds)->num_documents(); ++d) {
      const int64_t first = (*ds)->sequence_start((*ds)->document_index(d));
      const int64_t last = (*ds)->sequence_start((*ds)->document_index(d + 1));
      CATCH_REQUIRE(first <= last);
      std::vector<int32_t> out(last - first);
      CATCH_REQUIRE((*ds)->ReadTokens(first, last - first, out.data()).ok());
    }
  }
  CATCH_CHECK(rejected > 1500);
  CATCH_CHECK(opened + rejected == 2000);
}

CATCH_TEST_CASE("shards are found by prefix") {
  TempDir dir;
  std::string bin, idx;
  EncodeIndexedDataset(kDocs, TokenDType::kUint16, &bin, &idx);
  for (const char* name : {"s_00000", "s_00001", "s_00003"}) {
    WriteFile(dir / (std::string(name) + ".bin"), bin);
    WriteFile(dir / (std::string(name) + ".idx"), idx);
  }
  auto shards = FindShardPrefixes(dir / "s");
  CATCH_REQUIRE(shards.ok());
  CATCH_CHECK(shards->size() == 2);  // consecutive from 00000
  CATCH_CHECK(!FindShardPrefixes(dir / "none").ok());
}

}  // namespace
}  // namespace tessera::data
