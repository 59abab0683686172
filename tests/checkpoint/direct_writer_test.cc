// The O_DIRECT write path of shard files against the buffered one and against the bytes
// themselves: DirectWriter's file must equal the concatenation of what was appended (record
// sizes around the 4096-byte alignment and the buffer size, zero-length records), its CRC-32C
// must equal the checksum of the source bytes, and a shard file written with direct_io must be
// byte-identical to one written through the page cache, including where the file system
// refuses O_DIRECT and the writer falls back.
#include "checkpoint/direct_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/shard_file.h"
#include "core/crc32c.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace tessera::checkpoint {
namespace {

using testing::TempDir;

std::string RandomBytes(uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Sizes that end on, just before and just after the alignment and the buffer size, and empty ones.
std::vector<uint64_t> AwkwardSizes(uint64_t buffer) {
  return {0, 1, 63, 64, 4095, 4096, 4097, 0, buffer - 1, buffer, buffer + 1, 3 * buffer + 17, 0, 5};
}

CATCH_TEST_CASE("checkpoint DirectWriter: the file is the appended bytes, its CRC-32C theirs") {
  TempDir dir("direct-writer");
  // Small buffers (16 KiB, 3 of them) so the ring wraps many times; the sizes cross its edges.
  constexpr uint64_t kBuffer = 16 << 10;
  for (const bool odirect : {true, false}) {
    const std::string path = dir.path() + (odirect ? "/direct.bin" : "/buffered.bin");
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    int fd = odirect ? ::open(path.c_str(), flags | O_DIRECT, 0644) : -1;
    if (fd < 0) fd = ::open(path.c_str(), flags, 0644);
    CATCH_REQUIRE(fd >= 0);
    std::string expected;
    {
      DirectWriter w(fd, path, kBuffer, 3);
      uint32_t seed = 1;
      for (const uint64_t n : AwkwardSizes(kBuffer)) {
        const std::string bytes = RandomBytes(n, seed++);
        uint32_t crc = 0;
        CATCH_REQUIRE(w.Append(bytes.data(), n, &crc).ok());
        CATCH_CHECK(crc == Crc32c(bytes.data(), n));  // the reference: the source's own checksum
        CATCH_REQUIRE(w.AppendZeros(n % 7).ok());
        expected += bytes + std::string(n % 7, '\0');
      }
      const std::string patch = "PATCHED!";
      CATCH_REQUIRE(w.Finish(patch.data(), patch.size()).ok());
      expected.replace(0, patch.size(), patch);
      CATCH_CHECK(w.size() == expected.size());
    }
    CATCH_REQUIRE(::fsync(fd) == 0);
    CATCH_REQUIRE(::close(fd) == 0);
    CATCH_CHECK(*ReadFileToString(path) == expected);
  }
}

// Writes the same records to `path` with `options` and returns their Records.
std::vector<ShardFileWriter::Record> WriteShard(const std::string& path, const ShardWriteOptions& options,
                                                const std::vector<std::string>& records, bool* direct) {
  auto w = ShardFileWriter::Create(path, 3, options);
  TS_CHECK(w.ok()) << w.status();
  std::vector<ShardFileWriter::Record> out;
  for (const std::string& r : records) {
    auto rec = (*w)->Append(r.data(), r.size());
    TS_CHECK(rec.ok()) << rec.status();
    out.push_back(*rec);
  }
  *direct = (*w)->direct_io();
  TS_CHECK((*w)->Commit().ok());
  return out;
}

void CheckSameShards(const std::string& dir, const ShardWriteOptions& direct_options, bool expect_direct) {
  // Buffer size of the shard writer: 8 MiB.
  std::vector<std::string> records;
  uint32_t seed = 100;
  for (const uint64_t n : AwkwardSizes(uint64_t{8} << 20)) records.push_back(RandomBytes(n, seed++));
  bool buffered_direct = true, direct = false;
  const auto a = WriteShard(dir + "/buffered.bin", {}, records, &buffered_direct);
  const auto b = WriteShard(dir + "/direct.bin", direct_options, records, &direct);
  CATCH_CHECK(!buffered_direct);
  if (expect_direct) CATCH_CHECK(direct);
  if (direct_options.refuse_direct_io_for_testing) CATCH_CHECK(!direct);
  CATCH_REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CATCH_CHECK(a[i].offset == b[i].offset);
    CATCH_CHECK(b[i].length == records[i].size());
    CATCH_CHECK(b[i].crc32c == Crc32c(records[i].data(), records[i].size()));
  }
  const std::string fa = *ReadFileToString(dir + "/buffered.bin");
  const std::string fb = *ReadFileToString(dir + "/direct.bin");
  CATCH_CHECK(fa.size() == fb.size());
  CATCH_CHECK(fa == fb);
  auto header = ReadShardFileHeader(dir + "/direct.bin");
  CATCH_REQUIRE(header.ok());
  CATCH_CHECK(header->record_count == records.size());
  for (size_t i = 0; i < records.size(); ++i) CATCH_CHECK(fb.substr(b[i].offset, b[i].length) == records[i]);
}

bool AcceptsODirect(const std::string& dir) {
  const std::string path = dir + "/probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  if (fd >= 0) ::close(fd);
  ::unlink(path.c_str());
  return fd >= 0;
}

CATCH_TEST_CASE("checkpoint shard file: O_DIRECT and buffered writes give byte-identical files") {
  TempDir dir("direct-shard");
  const bool accepts = AcceptsODirect(dir.path());
  CATCH_INFO("the test directory's file system " << (accepts ? "accepts" : "refuses") << " O_DIRECT");
  CheckSameShards(dir.path(), {.direct_io = true}, accepts);
}

CATCH_TEST_CASE("checkpoint shard file: on tmpfs and where O_DIRECT is refused, the same bytes") {
  // /dev/shm is tmpfs (recent kernels accept O_DIRECT there; older ones refuse it with EINVAL).
  CATCH_REQUIRE(std::filesystem::is_directory("/dev/shm"));
  const std::string base = "/dev/shm/tessera-direct-" + std::to_string(::getpid());
  std::filesystem::create_directories(base);
  CheckSameShards(base, {.direct_io = true}, AcceptsODirect(base));
  // A refusal at open: the writer falls back to the page cache.
  CheckSameShards(base, {.direct_io = true, .refuse_direct_io_for_testing = true}, false);
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace tessera::checkpoint
