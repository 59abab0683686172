// Tests of trainer/checkpoint/checkpoint_reader, tensor_slices and checkpoint_dir on checkpoints
// written as if by several ranks: resharding reads (slices in another layout that span the
// saved shards' boundaries, flat ranges, padded tensor-parallel blocks), identical copies, and
// every kind of damage (flipped byte, truncated or missing shard file, newer manifest, a step
// directory without manifest) reported with the file and tensor, with FindLatestValid falling
// back to the previous checkpoint.
#include "checkpoint/checkpoint_reader.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/tensor_slices.h"
#include "core/crc32c.h"
#include "core/file_util.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;
namespace fs = std::filesystem;

namespace {

constexpr int kRanks = 4;

// "w" [10, 6] split in 4 along dim 0 by ShardSpec (blocks of 3 rows, the last one padded),
// "e" [7, 5] saved as flat ranges of uneven length by ranks 0-2 (ZeRO-style), "n" [6] saved
// identically by every rank (a replicated norm), "s" a scalar saved by rank 3, one blob per rank.
std::vector<RankSlices> FourRanks(double seed) {
  const at::Tensor w = Logical({10, 6}, seed), e = Logical({7, 5}, seed + 100), n = Logical({6}, seed + 200);
  std::vector<RankSlices> ranks(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    tessera::parallel::ShardSpec spec{.dim = 0, .parts = kRanks, .index = r, .global_size = 10};
    // The padded local block as a tensor-parallel rank holds it: real rows, then zero padding.
    at::Tensor local = at::zeros({spec.block_size(), 6});
    local.narrow(0, 0, spec.end() - spec.begin()).copy_(w.narrow(0, spec.begin(), spec.end() - spec.begin()));
    ranks[r].tensors.push_back(ShardSpecSlice("w", {10, 6}, spec, local));
    ranks[r].tensors.push_back(WholeTensor("n", n));
    ranks[r].blobs.push_back({absl::StrCat("rng/rank-", r), std::string(5 + r, static_cast<char>('a' + r))});
  }
  const int64_t cuts[] = {0, 11, 12, 35};
  for (int r = 0; r < 3; ++r) {
    ranks[r].tensors.push_back(
        FlatSlice("e", {7, 5}, cuts[r], e.reshape({-1}).slice(0, cuts[r], cuts[r + 1])));
  }
  ranks[3].tensors.push_back(WholeTensor("s", at::scalar_tensor(seed + 0.25, at::kFloat)));
  return ranks;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// The byte offset of `name`'s shard written by `rank`, and its file.
std::pair<std::string, uint64_t> Locate(const CheckpointReader& reader, const std::string& name, int rank) {
  for (const ShardRecord& s : (*reader.Tensor(name))->shards) {
    if (s.rank == rank) return {reader.step_dir() + "/" + s.file, s.byte_offset};
  }
  return {"", 0};
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
}

}  // namespace

CATCH_TEST_CASE("resharding: any slice of a tensor saved by 4 ranks, in other layouts") {
  TempDir dir("reshard");
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 7, FourRanks(1.0)).ok());
  auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 7));
  CATCH_REQUIRE(reader.ok());
  const CheckpointReader& r = **reader;
  const at::Tensor w = Logical({10, 6}, 1.0), e = Logical({7, 5}, 101.0);

  CATCH_CHECK(at::equal(*ReadTensor(r, "w"), w));
  CATCH_CHECK(at::equal(*ReadTensor(r, "e"), e));
  CATCH_CHECK(at::equal(*ReadTensor(r, "n"), Logical({6}, 201.0)));
  CATCH_CHECK(ReadTensor(r, "s")->item<float>() == 1.25f);
  // Written split in 4 along dim 0, read as 2 along dim 1: each half spans all four shards.
  CATCH_CHECK(at::equal(*ReadBox(r, "w", {0, 0}, {10, 3}), w.narrow(1, 0, 3)));
  CATCH_CHECK(at::equal(*ReadBox(r, "w", {0, 3}, {10, 3}), w.narrow(1, 3, 3)));
  // A box crossing the row blocks at 3 and 6 in both dimensions.
  CATCH_CHECK(at::equal(*ReadBox(r, "w", {2, 1}, {5, 4}), w.narrow(0, 2, 5).narrow(1, 1, 4)));
  // Flat ranges (a ZeRO layout) of the row-blocked tensor, and boxes of the flat-saved one.
  for (auto [begin, count] : {std::pair<int64_t, int64_t>{0, 7}, {7, 23}, {30, 30}, {17, 1}, {59, 1}}) {
    CATCH_CHECK(
        at::equal(*ReadFlatRange(r, "w", begin, count), w.reshape({-1}).slice(0, begin, begin + count)));
  }
  CATCH_CHECK(at::equal(*ReadBox(r, "e", {1, 0}, {3, 5}), e.narrow(0, 1, 3)));
  CATCH_CHECK(at::equal(*ReadBox(r, "e", {0, 2}, {7, 2}), e.narrow(1, 2, 2)));
  CATCH_CHECK(at::equal(*ReadFlatRange(r, "e", 10, 3), e.reshape({-1}).slice(0, 10, 13)));
  // A tensor-parallel layout of 4 along dim 1: blocks of 2 columns, the last one all padding.
  for (int index = 0; index < 4; ++index) {
    tessera::parallel::ShardSpec spec{.dim = 1, .parts = 4, .index = index, .global_size = 6};
    auto block = ReadShardSpecBlock(r, "w", spec);
    CATCH_REQUIRE(block.ok());
    CATCH_CHECK(block->sizes() == at::IntArrayRef({10, 2}));
    at::Tensor expected = at::zeros({10, 2});
    if (index < 3) expected = w.narrow(1, 2 * index, 2);
    CATCH_CHECK(at::equal(*block, expected));
  }
  for (int rank = 0; rank < kRanks; ++rank) {
    CATCH_CHECK(*r.ReadBlob(absl::StrCat("rng/rank-", rank)) ==
                std::string(5 + rank, static_cast<char>('a' + rank)));
  }
  CATCH_CHECK(r.VerifyChecksums().ok());
  // Misuse is reported, not undefined.
  CATCH_CHECK(Message(ReadTensor(r, "nope").status()).find("has no tensor 'nope'") != std::string::npos);
  CATCH_CHECK(!ReadBox(r, "w", {8, 0}, {3, 6}).ok());
}

CATCH_TEST_CASE(
    "a flipped byte is reported with the file and tensor, and an identical copy is used instead") {
  TempDir dir("flip");
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 1, FourRanks(1.0)).ok());
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 2, FourRanks(2.0)).ok());
  {
    auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 2));
    CATCH_REQUIRE(reader.ok());
    // "w" rows 3..5 (rank 1): the only copy.
    auto [file, offset] = Locate(**reader, "w", 1);
    FlipByte(file, offset + 13);
    // "n" of rank 0: ranks 1-3 hold identical copies.
    auto [nfile, noffset] = Locate(**reader, "n", 0);
    FlipByte(nfile, noffset + 2);
  }
  auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 2));
  CATCH_REQUIRE(reader.ok());  // structure is intact: only the data is damaged
  const auto w = ReadTensor(**reader, "w");
  CATCH_REQUIRE(!w.ok());
  CATCH_CHECK(w.status().code() == absl::StatusCode::kDataLoss);
  CATCH_CHECK(
      Message(w.status()).find("checksum mismatch in '" + StepDirPath(dir.path(), 2) + "/shard-00001.bin'") !=
      std::string::npos);
  CATCH_CHECK(Message(w.status()).find("tensor 'w' shard [3:6, 0:6] (rank 1)") != std::string::npos);
  // Rows that do not touch the damaged shard still read.
  CATCH_CHECK(at::equal(*ReadBox(**reader, "w", {0, 0}, {3, 6}), Logical({10, 6}, 2.0).narrow(0, 0, 3)));
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "n"), Logical({6}, 202.0)));
  CATCH_CHECK(!(*reader)->VerifyChecksums().ok());

  auto found = FindLatestValid(dir.path());
  CATCH_REQUIRE(found.ok());
  CATCH_CHECK(found->step == 1);
  CATCH_REQUIRE(found->skipped.size() == 1);
  CATCH_CHECK(found->skipped[0].path == StepDirPath(dir.path(), 2));
  CATCH_CHECK(Message(found->skipped[0].reason).find("checksum mismatch") != std::string::npos);
  // Structure-only verification does not read data, so it takes step 2.
  CATCH_CHECK(FindLatestValid(dir.path(), Verify::kStructure)->step == 2);
}

CATCH_TEST_CASE("a reader that skipped the file checks sizes no buffer from a length the file cannot hold") {
  // A manifest that is valid on its own: a 2^40-element tensor in one flat shard of 4 TiB inside
  // a shard file it says is 8 TiB. The real file has 64 bytes. Opened without the file checks,
  // reading must say so, not try to allocate 4 TiB.
  TempDir dir("huge");
  const std::string step_dir = StepDirPath(dir.path(), 1);
  fs::create_directories(step_dir);
  CATCH_REQUIRE(WriteFileDurable(step_dir + "/shard-00000.bin", std::string(64, 'x')).ok());
  Manifest m;
  m.step = 1;
  const int64_t n = int64_t{1} << 40;
  m.files = {{"shard-00000.bin", uint64_t{1} << 43, 0}};
  TensorEntry t{"w", DType::kFloat32, {n}, {}};
  t.shards.push_back({"shard-00000.bin", 64, static_cast<uint64_t>(n) * 4, Region::Flat(0, n), 0, 0});
  m.tensors.push_back(t);
  m.blobs.push_back({"rng", "shard-00000.bin", 1024, uint64_t{1} << 41, 0, 0});
  CATCH_REQUIRE(WriteFileDurable(step_dir + "/" + kManifestFileName, SerializeManifest(m)).ok());
  CATCH_CHECK(!CheckpointReader::Open(step_dir).ok());  // the file checks catch it
  auto lazy = CheckpointReader::Open(step_dir, /*check_files=*/false);
  CATCH_REQUIRE(lazy.ok());
  const std::string verify = Message((*lazy)->VerifyChecksums());
  CATCH_CHECK(verify.find("shard-00000.bin' is 64 bytes, but the manifest puts tensor 'w'") !=
              std::string::npos);
  const std::string blob = Message((*lazy)->ReadBlob("rng").status());
  CATCH_CHECK(blob.find("is 64 bytes, but the manifest puts blob 'rng'") != std::string::npos);
  std::vector<float> part(4);
  const std::string region =
      Message((*lazy)->ReadRegion("w", Region::Flat(8, 4), part.data(), part.size() * sizeof(float)));
  CATCH_CHECK(region.find("is 64 bytes, but the manifest puts") != std::string::npos);
}

CATCH_TEST_CASE("truncated and missing shard files, newer manifests and unfinished saves are skipped") {
  TempDir dir("damage");
  for (int step = 1; step <= 4; ++step) CATCH_REQUIRE(WriteAsRanks(dir.path(), step, FourRanks(step)).ok());
  // step 4: truncated shard file.
  const std::string shard4 = StepDirPath(dir.path(), 4) + "/shard-00002.bin";
  fs::resize_file(shard4, fs::file_size(shard4) - 10);
  auto open4 = CheckpointReader::Open(StepDirPath(dir.path(), 4));
  CATCH_REQUIRE(!open4.ok());
  CATCH_CHECK(Message(open4.status()).find("shard file '" + shard4 + "' is") != std::string::npos);
  CATCH_CHECK(Message(open4.status()).find("(truncated)") != std::string::npos);
  // Without the file checks (ranks of a large job), the damage shows when the shard is read.
  auto lazy4 = CheckpointReader::Open(StepDirPath(dir.path(), 4), /*check_files=*/false);
  CATCH_REQUIRE(lazy4.ok());
  CATCH_CHECK(Message((*lazy4)->VerifyChecksums()).find("is truncated") != std::string::npos);
  // step 3: missing shard file.
  fs::remove(StepDirPath(dir.path(), 3) + "/shard-00001.bin");
  auto open3 = CheckpointReader::Open(StepDirPath(dir.path(), 3));
  CATCH_CHECK(open3.status().code() == absl::StatusCode::kNotFound);
  CATCH_CHECK(Message(open3.status()).find("shard-00001.bin' is missing") != std::string::npos);
  // step 5: a newer manifest format; step 6: shard files but no manifest (a crashed save).
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 5, FourRanks(5)).ok());
  {
    const std::string path = StepDirPath(dir.path(), 5) + "/manifest.pb";
    auto m = ParseManifest(*tessera::ReadFileToString(path), path);
    m->format_version = kManifestFormatVersion + 1;
    CATCH_REQUIRE(WriteFileDurable(path, SerializeManifest(*m)).ok());
  }
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 6, FourRanks(6)).ok());
  fs::remove(StepDirPath(dir.path(), 6) + "/manifest.pb");

  auto found = FindLatestValid(dir.path(), Verify::kStructure);
  CATCH_REQUIRE(found.ok());
  CATCH_CHECK(found->step == 2);
  CATCH_REQUIRE(found->skipped.size() == 4);
  CATCH_CHECK(Message(found->skipped[0].reason).find("not a committed checkpoint") != std::string::npos);
  CATCH_CHECK(Message(found->skipped[1].reason).find("newer than this Tessera reads") != std::string::npos);
  CATCH_CHECK(Message(found->skipped[2].reason).find("truncated") != std::string::npos);
  CATCH_CHECK(Message(found->skipped[3].reason).find("missing") != std::string::npos);
  auto reader = CheckpointReader::Open(found->path);
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "w"), Logical({10, 6}, 2.0)));

  // A truncated manifest and a file that is not a shard file at all.
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 7, FourRanks(7)).ok());
  fs::resize_file(StepDirPath(dir.path(), 7) + "/manifest.pb", 30);
  CATCH_CHECK(!CheckpointReader::Open(StepDirPath(dir.path(), 7)).ok());
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 8, FourRanks(8)).ok());
  {
    std::ofstream junk(StepDirPath(dir.path(), 8) + "/shard-00000.bin", std::ios::binary | std::ios::trunc);
    junk << std::string(200, 'x');
  }
  auto open8 = CheckpointReader::Open(StepDirPath(dir.path(), 8));
  CATCH_CHECK(Message(open8.status()).find("not a Tessera shard file") != std::string::npos);
  CATCH_CHECK(FindLatestValid(dir.path(), Verify::kStructure)->step == 2);

  // Nothing usable at all.
  TempDir empty("empty");
  auto none = FindLatestValid(empty.path());
  CATCH_CHECK(none.status().code() == absl::StatusCode::kNotFound);
}

CATCH_TEST_CASE("a shard file header with a rank beyond int is refused, naming the file and field") {
  TempDir dir("shardheader");
  const std::string path = dir.path() + "/shard-00000.bin";
  {
    auto w = ShardFileWriter::Create(path, 0);
    CATCH_REQUIRE(w.ok());
    CATCH_REQUIRE((*w)->Append("abcd", 4).ok());
    CATCH_REQUIRE((*w)->Commit().ok());
  }
  CATCH_REQUIRE(ReadShardFileHeader(path).ok());
  // Rank 2^32 - 1 with a header checksum that matches: only the range check stops it.
  std::string bytes = *tessera::ReadFileToString(path);
  for (int i = 16; i < 20; ++i) bytes[i] = '\xff';
  const uint32_t crc = tessera::Crc32c(bytes.data(), 32);
  std::memcpy(bytes.data() + 32, &crc, 4);
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }
  auto header = ReadShardFileHeader(path);
  CATCH_REQUIRE(!header.ok());
  CATCH_CHECK(Message(header.status()) ==
              "shard file '" + path +
                  "' names writing rank 4294967295 (byte offset 16); ranks are below 2^31");
}

CATCH_TEST_CASE("a TP 2 to TP 1 load reads each saved byte once, column halves of row blocks twice") {
  // Two ranks saved "w" [8, 6] in row blocks (tensor parallelism of 2 along dim 0). The counts
  // are the tensor's own size (8 x 6 x 4 bytes), not anything the reader reports about itself.
  TempDir dir("bytes-read");
  const at::Tensor w = Logical({8, 6}, 3.0);
  std::vector<RankSlices> ranks(2);
  for (int r = 0; r < 2; ++r) ranks[r].tensors.push_back(RowsSlice("w", w, 0, 4 * r, 4 * r + 4));
  CATCH_REQUIRE(WriteAsRanks(dir.path(), 1, ranks).ok());
  const uint64_t model_bytes = w.nbytes();
  {
    auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 1));
    CATCH_REQUIRE(reader.ok());
    CATCH_CHECK(at::equal(*ReadTensor(**reader, "w"), w));  // TP 1: the whole tensor
    CATCH_CHECK((*reader)->bytes_read() == model_bytes);
  }
  {
    // TP 2 along dim 1 (column halves): every half overlaps both row blocks, each read whole.
    auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 1));
    CATCH_REQUIRE(reader.ok());
    CATCH_CHECK(at::equal(*ReadBox(**reader, "w", {0, 0}, {8, 3}), w.narrow(1, 0, 3)));
    CATCH_CHECK(at::equal(*ReadBox(**reader, "w", {0, 3}, {8, 3}), w.narrow(1, 3, 3)));
    CATCH_CHECK((*reader)->bytes_read() == 2 * model_bytes);
  }
}
