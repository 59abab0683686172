// Tests of trainer/checkpoint/manifest: serialization round trip, the format-version check, and
// the structural checks (coverage, overlaps, byte ranges, agreement between ranks).
#include "checkpoint/manifest.h"

#include <string>

#include "absl/strings/str_cat.h"

#include "tests/catch_compat.h"

using namespace tessera::checkpoint;

namespace {

// tensor "w" [4, 3] float32 saved as two row blocks by ranks 0 and 1.
Manifest TwoRankManifest() {
  Manifest m;
  m.step = 42;
  m.consumed_samples = 4200;
  m.data_position = "epoch=1;index=17";
  m.config_yaml = "model:\n  dim: 8\n";
  m.layout = Layout{2, 2, 1, 1, 0, 1};
  m.created_unix_time = 1700000000;
  m.writer = "tessera test";
  m.files = {{"shard-00000.bin", 64 + 24 + 64, 0}, {"shard-00001.bin", 64 + 24, 1}};
  TensorEntry w{"w", DType::kFloat32, {4, 3}, {}};
  w.shards.push_back({"shard-00000.bin", 64, 24, Region::Box({0, 0}, {2, 3}), 0x1234, 0});
  w.shards.push_back({"shard-00001.bin", 64, 24, Region::Box({2, 0}, {2, 3}), 0x5678, 1});
  m.tensors.push_back(w);
  TensorEntry flat{"optim.exp_avg/w", DType::kFloat32, {4, 3}, {}};
  flat.shards.push_back({"shard-00000.bin", 128, 12, Region::Flat(0, 3), 1, 0});
  flat.shards.push_back({"shard-00000.bin", 128, 12, Region::Flat(0, 3), 1, 0});  // an identical copy
  flat.shards.push_back({"shard-00001.bin", 64, 24, Region::Flat(3, 9), 2, 1});
  flat.shards.back().byte_length = 36;
  flat.shards.back().byte_offset = 52;
  m.tensors.push_back(flat);
  m.blobs.push_back({"rng/rank-00000", "shard-00000.bin", 140, 8, 9, 0});
  return m;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

}  // namespace

CATCH_TEST_CASE("manifest round trip keeps every field, bytes are deterministic") {
  const Manifest m = TwoRankManifest();
  CATCH_REQUIRE(ValidateManifest(m, "m").ok());
  const std::string bytes = SerializeManifest(m);
  CATCH_CHECK(SerializeManifest(m) == bytes);
  auto back = ParseManifest(bytes, "m");
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->step == 42);
  CATCH_CHECK(back->consumed_samples == 4200);
  CATCH_CHECK(back->data_position == "epoch=1;index=17");
  CATCH_CHECK(back->config_yaml == m.config_yaml);
  CATCH_CHECK(back->layout.world_size == 2);
  CATCH_CHECK(back->layout.tp == 2);
  CATCH_CHECK(back->created_unix_time == 1700000000);
  CATCH_CHECK(back->writer == "tessera test");
  CATCH_REQUIRE(back->tensors.size() == 2);
  CATCH_CHECK(back->tensors[0].shards[1].region == Region::Box({2, 0}, {2, 3}));
  CATCH_CHECK(back->tensors[0].shards[1].crc32c == 0x5678u);
  CATCH_CHECK(back->tensors[1].shards[2].region == Region::Flat(3, 9));
  CATCH_CHECK(back->blobs.at(0).name == "rng/rank-00000");
  CATCH_CHECK(SerializeManifest(*back) == bytes);
}

CATCH_TEST_CASE("a manifest of a newer format version is refused with a clear error") {
  Manifest m = TwoRankManifest();
  m.format_version = kManifestFormatVersion + 1;
  auto parsed = ParseManifest(SerializeManifest(m), "ckpt/step-00000042/manifest.pb");
  CATCH_REQUIRE(!parsed.ok());
  CATCH_CHECK(parsed.status().code() == absl::StatusCode::kFailedPrecondition);
  CATCH_CHECK(Message(parsed.status())
                  .find(absl::StrCat("ckpt/step-00000042/manifest.pb: manifest format version ",
                                     kManifestFormatVersion + 1, " is newer")) != std::string::npos);
  CATCH_CHECK(!ParseManifest("not a protobuf \xff\xff", "x").ok());
  CATCH_CHECK(!ParseManifest("", "x").ok());  // parses as empty, but has no format version
}

CATCH_TEST_CASE("the manifest's own CRC: any changed byte or a truncation is refused, naming the file") {
  const std::string good = SerializeManifest(TwoRankManifest());
  CATCH_REQUIRE(ParseManifest(good, "m").ok());
  // The CRC field is the last 5 bytes: tag 0x65 (field 12, fixed32), then the CRC little-endian.
  CATCH_CHECK(static_cast<uint8_t>(good[good.size() - 5]) == 0x65);
  // A flipped bit inside a string field still parses as a valid message: only the CRC tells.
  std::string flipped = good;
  const size_t at = flipped.find("epoch=1");
  CATCH_REQUIRE(at != std::string::npos);
  flipped[at] ^= 0x01;  // "epoch" -> "dpoch"
  auto bad = ParseManifest(flipped, "ckpt/step-00000042/manifest.pb");
  CATCH_REQUIRE(!bad.ok());
  CATCH_CHECK(bad.status().code() == absl::StatusCode::kDataLoss);
  CATCH_CHECK(Message(bad.status()).find("ckpt/step-00000042/manifest.pb: manifest checksum mismatch") !=
              std::string::npos);
  // Every single-byte change of the body is caught (by the CRC or by the parser).
  for (size_t i = 0; i < good.size(); ++i) {
    std::string changed = good;
    changed[i] = static_cast<char>(changed[i] ^ 0x20);
    CATCH_CHECK(!ParseManifest(changed, "m").ok());
  }
  // Cutting the CRC off leaves a parseable message that claims version 2 and has no CRC.
  auto cut = ParseManifest(good.substr(0, good.size() - 5), "m");
  CATCH_REQUIRE(!cut.ok());
  CATCH_CHECK(Message(cut.status()).find("does not end with its CRC-32C field") != std::string::npos);
}

CATCH_TEST_CASE("a version 1 manifest (written before the CRC existed) is still read") {
  Manifest m = TwoRankManifest();
  m.format_version = 1;
  const std::string bytes = SerializeManifest(m);
  CATCH_CHECK(static_cast<uint8_t>(bytes[bytes.size() - 5]) != 0x65);  // no CRC field written
  auto back = ParseManifest(bytes, "m");
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->format_version == 1u);
  CATCH_CHECK(back->step == 42);
}

CATCH_TEST_CASE("validation: coverage, overlaps, byte ranges, names") {
  {
    Manifest m = TwoRankManifest();
    m.tensors[0].shards.pop_back();  // rows 2..3 of "w" saved by nobody
    const absl::Status s = ValidateManifest(m, "m");
    CATCH_CHECK(Message(s).find("tensor 'w' of shape [4, 3] has 12 elements but its shards cover 6") !=
                std::string::npos);
  }
  {
    Manifest m = TwoRankManifest();
    m.tensors[0].shards[1].region = Region::Box({1, 0}, {2, 3});  // overlaps rank 0's rows
    m.tensors[0].shards[1].byte_length = 24;
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("overlap") != std::string::npos);
  }
  {
    Manifest m = TwoRankManifest();
    m.tensors[0].shards[0].byte_length = 20;
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("has 20 bytes; 6 float32 elements need 24") !=
                std::string::npos);
  }
  {
    Manifest m = TwoRankManifest();
    m.tensors[0].shards[0].byte_offset = 140;  // past the 152 bytes of shard-00000.bin
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("beyond the 152 bytes of 'shard-00000.bin'") !=
                std::string::npos);
  }
  {
    Manifest m = TwoRankManifest();
    m.files[1].name = "../escape.bin";
    CATCH_CHECK(!ValidateManifest(m, "m").ok());
  }
  {
    Manifest m = TwoRankManifest();
    m.tensors[1].shards[0].region = Region::Box({0, 0}, {1, 3});
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("mixes box and flat-range shards") !=
                std::string::npos);
  }
  {
    Manifest m = TwoRankManifest();
    m.tensors.push_back(m.tensors[0]);
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("listed twice") != std::string::npos);
  }
}

CATCH_TEST_CASE("validation: hostile sizes and offsets are errors naming the tensor, never overflow") {
  {
    // A global shape of 2^62 float32 elements: the count fits int64, its bytes do not.
    Manifest m = TwoRankManifest();
    m.tensors[0].global_shape = {int64_t{1} << 31, int64_t{1} << 31};
    const absl::Status s = ValidateManifest(m, "m");
    CATCH_CHECK(s.code() == absl::StatusCode::kDataLoss);
    CATCH_CHECK(Message(s) ==
                "m: tensor 'w' of shape [2147483648, 2147483648] has more float32 bytes than "
                "fit in int64");
  }
  {
    // Its element count does not fit either; and a tensor with no shards is checked all the same.
    Manifest m = TwoRankManifest();
    m.tensors[0].global_shape = {int64_t{1} << 32, int64_t{1} << 32};
    m.tensors[0].shards.clear();
    CATCH_CHECK(Message(ValidateManifest(m, "m")) ==
                "m: tensor 'w': global shape [4294967296, 4294967296] has more elements than fit in int64");
    m.tensors[0].global_shape = {4, -3};
    CATCH_CHECK(
        Message(ValidateManifest(m, "m")).find("m: tensor 'w': global shape [4, -3] has a negative size") !=
        std::string::npos);
  }
  {
    // A flat range whose end wraps around past INT64_MAX.
    Manifest m = TwoRankManifest();
    m.tensors[1].shards[2].region = Region::Flat(3, INT64_MAX);
    CATCH_CHECK(
        Message(ValidateManifest(m, "m")).find("flat[3:3+9223372036854775807) is outside the 12 elements") !=
        std::string::npos);
  }
  {
    // Byte offset + length beyond 2^64: refused, and the message does not wrap either.
    Manifest m = TwoRankManifest();
    m.blobs[0].offset = ~uint64_t{0} - 2;
    CATCH_CHECK(
        Message(ValidateManifest(m, "m")) ==
        "m: blob 'rng/rank-00000' has 8 bytes at offset 18446744073709551613, beyond the 152 bytes of "
        "'shard-00000.bin'");
    m = TwoRankManifest();
    m.blobs[0].length = ~uint64_t{0};
    CATCH_CHECK(Message(ValidateManifest(m, "m")).find("beyond the 152 bytes") != std::string::npos);
  }
  {
    // The same through the bytes: a hostile shard in a serialized manifest.
    Manifest m = TwoRankManifest();
    m.tensors[0].shards[1].region = Region::Box({2, INT64_MAX}, {2, 3});
    auto parsed = ParseManifest(SerializeManifest(m), "ckpt/manifest.pb");
    CATCH_REQUIRE(!parsed.ok());
    CATCH_CHECK(Message(parsed.status())
                    .find("ckpt/manifest.pb: tensor 'w' shard [2:4, 9223372036854775807:"
                          "9223372036854775807+3] (rank 1): box") != std::string::npos);
  }
}

CATCH_TEST_CASE("merging rank reports: tensors by name, disagreements are errors") {
  const Manifest full = TwoRankManifest();
  RankReport r0{0, 42, "", 0, {}, {}, full.files[0]};
  RankReport r1{1, 42, "", 0, {}, {}, full.files[1]};
  r0.tensors.push_back(TensorEntry{"w", DType::kFloat32, {4, 3}, {full.tensors[0].shards[0]}});
  r1.tensors.push_back(TensorEntry{"w", DType::kFloat32, {4, 3}, {full.tensors[0].shards[1]}});
  {
    Manifest m;
    m.step = 42;
    CATCH_REQUIRE(MergeRankReports({r0, r1}, m, "m").ok());
    CATCH_CHECK(m.tensors.size() == 1);
    CATCH_CHECK(m.tensors[0].shards.size() == 2);
    CATCH_CHECK(m.files.size() == 2);
  }
  {
    RankReport bad = r1;
    bad.tensors[0].global_shape = {5, 3};
    Manifest m;
    m.step = 42;
    const absl::Status s = MergeRankReports({r0, bad}, m, "m");
    CATCH_CHECK(Message(s).find("tensor 'w': rank 0 saved float32 [4, 3] but rank 1 saved float32 [5, 3]") !=
                std::string::npos);
  }
  {
    RankReport late = r1;
    late.step = 41;
    Manifest m;
    m.step = 42;
    CATCH_CHECK(Message(MergeRankReports({r0, late}, m, "m")).find("rank 1 saved step 41") !=
                std::string::npos);
  }
  {
    RankReport round = r1;
    round.error = "disk full";
    round.error_code = 8;
    auto back = ParseRankReport(SerializeRankReport(round), 1);
    CATCH_REQUIRE(back.ok());
    CATCH_CHECK(back->error == "disk full");
    CATCH_CHECK(back->error_code == 8);
    CATCH_CHECK(back->tensors.at(0).shards.at(0).region == Region::Box({2, 0}, {2, 3}));
  }
}
