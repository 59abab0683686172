// Tests of trainer/tensorboard/tensorboard_writer: the files it writes are read back by an
// independent reader in this file (TFRecord framing checked with a bitwise CRC-32C, Event and
// Summary decoded from the Protobuf wire format by hand with TensorBoard's field numbers), plus
// buffering, file naming and the errors. tensorboard_test.py reads the same files with
// TensorBoard's own EventAccumulator.
#include "trainer/tensorboard/tensorboard_writer.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tests/catch_compat.h"

namespace fs = std::filesystem;
using tessera::tensorboard::TensorBoardWriter;
using tessera::tensorboard::TensorBoardWriterOptions;

namespace {

// --- An independent reader --------------------------------------------------------------

uint32_t BitwiseMaskedCrc32c(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  crc = ~crc;
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

uint64_t LittleEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return v;
}

// Splits a TFRecord file into payloads; any framing or CRC error fails the test.
std::vector<std::string> ReadRecords(const std::string& bytes) {
  std::vector<std::string> records;
  std::string_view rest(bytes);
  while (!rest.empty()) {
    CATCH_REQUIRE(rest.size() >= 12);
    const uint64_t length = LittleEndian(rest.substr(0, 8));
    CATCH_REQUIRE(LittleEndian(rest.substr(8, 4)) == BitwiseMaskedCrc32c(rest.substr(0, 8)));
    CATCH_REQUIRE(rest.size() >= 12 + length + 4);
    const std::string_view payload = rest.substr(12, length);
    CATCH_REQUIRE(LittleEndian(rest.substr(12 + length, 4)) == BitwiseMaskedCrc32c(payload));
    records.emplace_back(payload);
    rest.remove_prefix(12 + length + 4);
  }
  return records;
}

uint64_t ReadVarint(std::string_view* in) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    CATCH_REQUIRE(!in->empty());
    const unsigned char b = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
  CATCH_FAIL("varint longer than 10 bytes");
  return 0;
}

std::string_view ReadLengthDelimited(std::string_view* in) {
  const uint64_t n = ReadVarint(in);
  CATCH_REQUIRE(in->size() >= n);
  std::string_view out = in->substr(0, n);
  in->remove_prefix(n);
  return out;
}

struct Scalar {
  std::string tag;
  std::optional<float> value;  // empty when field 2 (simple_value) is absent
};

struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::optional<std::string> file_version;
  bool has_summary = false;
  std::vector<Scalar> values;
};

// TensorBoard's numbers: Event {wall_time=1 double, step=2 int64, file_version=3 string,
// summary=5}; Summary {value=1}; Summary.Value {tag=1 string, simple_value=2 float}.
DecodedEvent DecodeEvent(std::string_view in) {
  DecodedEvent e;
  while (!in.empty()) {
    const uint64_t key = ReadVarint(&in);
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 1) {
      uint64_t bits = LittleEndian(in.substr(0, 8));
      in.remove_prefix(8);
      std::memcpy(&e.wall_time, &bits, 8);
    } else if (field == 2 && wire == 0) {
      e.step = static_cast<int64_t>(ReadVarint(&in));
    } else if (field == 3 && wire == 2) {
      e.file_version = std::string(ReadLengthDelimited(&in));
    } else if (field == 5 && wire == 2) {
      e.has_summary = true;
      std::string_view summary = ReadLengthDelimited(&in);
      while (!summary.empty()) {
        CATCH_REQUIRE(ReadVarint(&summary) == ((1 << 3) | 2));
        std::string_view value = ReadLengthDelimited(&summary);
        Scalar s;
        while (!value.empty()) {
          const uint64_t vkey = ReadVarint(&value);
          if (vkey == ((1 << 3) | 2)) {
            s.tag = std::string(ReadLengthDelimited(&value));
          } else if (vkey == ((2 << 3) | 5)) {
            uint32_t bits = static_cast<uint32_t>(LittleEndian(value.substr(0, 4)));
            value.remove_prefix(4);
            float f;
            std::memcpy(&f, &bits, 4);
            s.value = f;
          } else {
            CATCH_FAIL("unexpected Summary.Value field key " << vkey);
          }
        }
        e.values.push_back(s);
      }
    } else {
      CATCH_FAIL("unexpected Event field " << field << " wire type " << wire);
    }
  }
  return e;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<DecodedEvent> ReadEvents(const std::string& path) {
  std::vector<DecodedEvent> events;
  for (const std::string& record : ReadRecords(ReadFile(path))) events.push_back(DecodeEvent(record));
  return events;
}

fs::path FreshDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tessera_tb_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

std::string HostName() {
  char name[256] = {};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

// Sets RLIMIT_FSIZE for its lifetime (SIGXFSZ ignored, so writes fail with EFBIG instead).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t old_handler_;
};

}  // namespace

CATCH_TEST_CASE("tensorboard writer: file_version first, then every scalar exactly") {
  const fs::path dir = FreshDir("scalars") / "nested";  // Open creates missing parents
  const double before = tessera::tensorboard::WallTimeNow();
  auto writer = TensorBoardWriter::Open(dir.string());
  CATCH_REQUIRE(writer.ok());
  const std::string name = fs::path((*writer)->path()).filename().string();
  const std::string prefix = "events.out.tfevents." + std::to_string(static_cast<int64_t>(before)) + ".";
  // The name holds the second of Open; the clock may tick once between `before` and Open.
  CATCH_CHECK(
      (name.rfind(prefix, 0) == 0 ||
       name.rfind("events.out.tfevents." + std::to_string(static_cast<int64_t>(before) + 1) + ".", 0) == 0));
  CATCH_CHECK(name.substr(name.size() - HostName().size()) == HostName());

  const float nan = std::numeric_limits<float>::quiet_NaN();
  CATCH_REQUIRE((*writer)->AddScalar("loss", 1, 2.5, 1000.25).ok());
  CATCH_REQUIRE((*writer)->AddScalar("zero", 2, 0.0, 1001.5).ok());
  CATCH_REQUIRE((*writer)->AddScalar("group/negative", -5, -1e-3, 1002).ok());
  CATCH_REQUIRE((*writer)->AddScalar("nan", 3, std::nan(""), 1003).ok());
  CATCH_REQUIRE((*writer)->AddScalar("big", int64_t{1} << 40, 1e30, 1004).ok());
  CATCH_REQUIRE((*writer)->AddScalar("\xc3\xbc/\xe6\x8d\x9f\xe5\xa4\xb1", 4, 0.1, 1005).ok());  // "ü/损失"
  CATCH_REQUIRE((*writer)->AddScalars(7, {{"a", 1}, {"b", -2}}, 1006).ok());
  CATCH_REQUIRE((*writer)->AddScalar("now", 8, 1).ok());
  const double after = tessera::tensorboard::WallTimeNow();
  CATCH_REQUIRE((*writer)->Close().ok());

  const std::vector<DecodedEvent> events = ReadEvents((*writer)->path());
  CATCH_REQUIRE(events.size() == 9);
  CATCH_CHECK(events[0].file_version == std::optional<std::string>("brain.Event:2"));
  CATCH_CHECK(!events[0].has_summary);
  CATCH_CHECK(events[0].wall_time >= before);
  CATCH_CHECK(events[0].wall_time <= after);
  struct Expected {
    int64_t step;
    double wall_time;
    std::vector<std::pair<std::string, float>> values;
  };
  const std::vector<Expected> expected = {
      {1, 1000.25, {{"loss", 2.5f}}},
      {2, 1001.5, {{"zero", 0.0f}}},
      {-5, 1002, {{"group/negative", static_cast<float>(-1e-3)}}},
      {3, 1003, {{"nan", nan}}},
      {int64_t{1} << 40, 1004, {{"big", 1e30f}}},
      {4, 1005, {{"\xc3\xbc/\xe6\x8d\x9f\xe5\xa4\xb1", 0.1f}}},
      {7, 1006, {{"a", 1.0f}, {"b", -2.0f}}},
  };
  for (size_t i = 0; i < expected.size(); ++i) {
    const DecodedEvent& e = events[i + 1];
    CATCH_INFO("event " << i + 1);
    CATCH_CHECK(!e.file_version);
    CATCH_CHECK(e.step == expected[i].step);
    CATCH_CHECK(e.wall_time == expected[i].wall_time);
    CATCH_REQUIRE(e.values.size() == expected[i].values.size());
    for (size_t k = 0; k < e.values.size(); ++k) {
      CATCH_CHECK(e.values[k].tag == expected[i].values[k].first);
      // Present even when 0.0: readers keep a value only when simple_value is on the wire.
      CATCH_REQUIRE(e.values[k].value.has_value());
      const float want = expected[i].values[k].second;
      if (std::isnan(want)) {
        CATCH_CHECK(std::isnan(*e.values[k].value));
      } else {
        CATCH_CHECK(*e.values[k].value == want);  // exact: the writer rounds double to float once
      }
    }
  }
  // The default wall time is the time of the call.
  CATCH_CHECK(events[8].wall_time >= before);
  CATCH_CHECK(events[8].wall_time <= after);
  fs::remove_all(dir.parent_path());
}

CATCH_TEST_CASE("tensorboard writer buffers until Flush and flushes when destroyed") {
  const fs::path dir = FreshDir("buffer");
  TensorBoardWriterOptions options;
  options.flush_interval_s = 1e9;  // never by time in this test
  options.flush_bytes = 1 << 20;
  std::string path;
  {
    auto writer = TensorBoardWriter::Open(dir.string(), options);
    CATCH_REQUIRE(writer.ok());
    path = (*writer)->path();
    const auto version_only = fs::file_size(path);  // Open flushes the file_version record
    CATCH_CHECK(ReadEvents(path).size() == 1);
    CATCH_REQUIRE((*writer)->AddScalar("loss", 1, 1.0).ok());
    CATCH_CHECK(fs::file_size(path) == version_only);
    CATCH_REQUIRE((*writer)->Flush().ok());
    CATCH_CHECK(ReadEvents(path).size() == 2);
    CATCH_REQUIRE((*writer)->AddScalar("loss", 2, 0.5).ok());
    CATCH_CHECK(ReadEvents(path).size() == 2);
  }
  CATCH_CHECK(ReadEvents(path).size() == 3);
  fs::remove_all(dir);
}

CATCH_TEST_CASE("tensorboard writer flushes by size and by interval on its own") {
  const fs::path dir = FreshDir("autoflush");
  TensorBoardWriterOptions by_size;
  by_size.flush_interval_s = 1e9;
  by_size.flush_bytes = 200;  // a scalar event is ~30 bytes framed: a flush every few adds
  auto writer = TensorBoardWriter::Open(dir.string(), by_size);
  CATCH_REQUIRE(writer.ok());
  int added = 0;
  while (ReadEvents((*writer)->path()).size() == 1 && added < 100) {
    CATCH_REQUIRE((*writer)->AddScalar("loss", added, added).ok());
    ++added;
  }
  CATCH_CHECK(added > 1);   // not every add ...
  CATCH_CHECK(added < 20);  // ... but soon after 200 bytes
  CATCH_CHECK(ReadEvents((*writer)->path()).size() == static_cast<size_t>(1 + added));

  TensorBoardWriterOptions every_add;
  every_add.flush_interval_s = 0;
  auto eager = TensorBoardWriter::Open(dir.string(), every_add);
  CATCH_REQUIRE(eager.ok());
  CATCH_CHECK((*eager)->path() != (*writer)->path());
  CATCH_REQUIRE((*eager)->AddScalar("loss", 1, 1).ok());
  CATCH_CHECK(ReadEvents((*eager)->path()).size() == 2);
  fs::remove_all(dir);
}

CATCH_TEST_CASE("tensorboard writers in one directory get distinct files, the suffix ends the name") {
  const fs::path dir = FreshDir("names");
  TensorBoardWriterOptions options;
  options.filename_suffix = ".rank3";
  std::vector<std::unique_ptr<TensorBoardWriter>> writers;
  for (int i = 0; i < 3; ++i) {
    auto w = TensorBoardWriter::Open(dir.string(), options);
    CATCH_REQUIRE(w.ok());
    writers.push_back(*std::move(w));
  }
  CATCH_CHECK(writers[0]->path().find(".rank3") != std::string::npos);
  CATCH_CHECK(writers[0]->path().substr(writers[0]->path().size() - 6) == ".rank3");
  CATCH_CHECK(writers[0]->path() != writers[1]->path());
  CATCH_CHECK(writers[1]->path() != writers[2]->path());
  CATCH_CHECK(writers[0]->path() != writers[2]->path());
  fs::remove_all(dir);
}

CATCH_TEST_CASE("tensorboard writer rejects bad arguments with messages that say what") {
  const fs::path dir = FreshDir("errors");
  TensorBoardWriterOptions slash;
  slash.filename_suffix = "a/b";
  auto bad_suffix = TensorBoardWriter::Open(dir.string(), slash);
  CATCH_CHECK(absl::IsInvalidArgument(bad_suffix.status()));

  fs::create_directories(dir);
  const std::string file = (dir / "plain_file").string();
  std::ofstream(file) << "x";
  auto not_dir = TensorBoardWriter::Open(file);
  CATCH_REQUIRE_FALSE(not_dir.ok());
  CATCH_CHECK(std::string(not_dir.status().message()).find(file) != std::string::npos);

  auto writer = TensorBoardWriter::Open(dir.string());
  CATCH_REQUIRE(writer.ok());
  CATCH_CHECK(absl::IsInvalidArgument((*writer)->AddScalar("", 1, 1)));
  CATCH_CHECK(absl::IsInvalidArgument((*writer)->AddScalar("bad\xff", 1, 1)));
  CATCH_CHECK(absl::IsInvalidArgument((*writer)->AddScalar("cut\xe6\x8d", 1, 1)));
  CATCH_CHECK(absl::IsInvalidArgument((*writer)->AddScalar("surrogate\xed\xa0\x80", 1, 1)));
  CATCH_REQUIRE((*writer)->Close().ok());
  absl::Status closed = (*writer)->AddScalar("loss", 1, 1);
  CATCH_CHECK(absl::IsFailedPrecondition(closed));
  CATCH_CHECK(std::string(closed.message()).find((*writer)->path()) != std::string::npos);
  CATCH_CHECK(ReadEvents((*writer)->path()).size() == 1);  // the rejected scalars left no trace
  fs::remove_all(dir);
}

CATCH_TEST_CASE("tensorboard writer reports a failed write naming the file, and stays failed") {
  const fs::path dir = FreshDir("ioerror");
  TensorBoardWriterOptions options;
  options.flush_interval_s = 1e9;
  auto writer = TensorBoardWriter::Open(dir.string(), options);
  CATCH_REQUIRE(writer.ok());
  for (int step = 0; step < 100; ++step) CATCH_REQUIRE((*writer)->AddScalar("loss", step, step).ok());
  absl::Status flushed;
  {
    // A real write failure: the file may not grow past 100 bytes more than it has.
    FileSizeLimit limit(fs::file_size((*writer)->path()) + 100);
    flushed = (*writer)->Flush();
  }
  CATCH_REQUIRE_FALSE(flushed.ok());
  CATCH_CHECK(std::string(flushed.message()).find((*writer)->path()) != std::string::npos);
  absl::Status later = (*writer)->AddScalar("loss", 101, 1);
  CATCH_CHECK(later == flushed);
  CATCH_CHECK((*writer)->Close() == flushed);
  fs::remove_all(dir);
}
