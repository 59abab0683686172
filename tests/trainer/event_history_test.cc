// Tests of trainer/tensorboard/event_history: event files written by TensorBoardWriter across
// simulated attempts (stopped, resumed from a checkpoint, rolled back), cut back to a step, then
// read by a decoder in this file (TFRecord framing via ReadFramedRecord, the Event's step and
// file_version fields from the Protobuf wire format by hand, TensorBoard's field numbers).
#include "trainer/tensorboard/event_history.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "tests/catch_compat.h"
#include "trainer/tensorboard/record_framing.h"
#include "trainer/tensorboard/tensorboard_writer.h"

namespace fs = std::filesystem;
using tessera::tensorboard::FramedRead;
using tessera::tensorboard::ListEventFiles;
using tessera::tensorboard::ReadFramedRecord;
using tessera::tensorboard::TensorBoardWriter;
using tessera::tensorboard::TruncateEventFiles;
using Steps = std::vector<int64_t>;

namespace {

fs::path FreshDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tessera_events_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

uint64_t Varint(std::string_view data, size_t* at) {
  uint64_t value = 0;
  for (int shift = 0; *at < data.size(); shift += 7) {
    const unsigned char byte = static_cast<unsigned char>(data[(*at)++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) break;
  }
  return value;
}

// The steps of one file's step events, in order; -1 stands for a file_version record.
Steps StepsOf(const std::string& path) {
  const std::string bytes = *tessera::ReadFileToString(path);
  Steps steps;
  size_t offset = 0;
  std::string_view payload;
  FramedRead read;
  while ((read = ReadFramedRecord(bytes, &offset, &payload)) == FramedRead::kRecord) {
    int64_t step = 0;
    bool file_version = false;
    for (size_t at = 0; at < payload.size();) {
      const uint64_t key = Varint(payload, &at);
      const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
      if (wire == 0) {
        const uint64_t value = Varint(payload, &at);
        if (field == 2) step = static_cast<int64_t>(value);
      } else if (wire == 1) {
        at += 8;  // wall_time
      } else if (wire == 2) {
        at += Varint(payload, &at);
        if (field == 3) file_version = true;
      } else {
        CATCH_FAIL("unexpected wire type " << wire);
      }
    }
    steps.push_back(file_version ? -1 : step);
  }
  CATCH_CHECK(read == FramedRead::kEnd);  // every rewritten file is whole
  return steps;
}

// One attempt of a run: a new writer (a new file), one event per step.
void Attempt(const fs::path& dir, const Steps& steps) {
  auto writer = TensorBoardWriter::Open(dir.string());
  CATCH_REQUIRE(writer.ok());
  for (int64_t step : steps) {
    CATCH_REQUIRE((*writer)->AddScalars(step, {{"loss", 10.0 - 0.1 * step}, {"lr", 1e-3}}).ok());
  }
  CATCH_REQUIRE((*writer)->Close().ok());
}

ino_t Inode(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_ino;
}

}  // namespace

CATCH_TEST_CASE("a resumed run's event files keep each step once, up to the checkpoint") {
  const fs::path dir = FreshDir("resume");
  // Attempt 1 logs steps 1..10 and is stopped; the newest checkpoint is step 6.
  Attempt(dir, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  auto cut = TruncateEventFiles(dir.string(), 6);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept == 6);
  CATCH_CHECK(cut->dropped == 4);
  CATCH_CHECK(cut->unreadable == 0);
  auto files = ListEventFiles(dir.string());
  CATCH_REQUIRE(files.ok());
  CATCH_REQUIRE(files->size() == 1);
  CATCH_CHECK(StepsOf((*files)[0]) == Steps{-1, 1, 2, 3, 4, 5, 6});

  // Attempt 2 resumes at step 7 into a file of its own, and ends normally; a later resume from
  // its final checkpoint changes nothing, and rewrites nothing.
  Attempt(dir, {7, 8, 9, 10, 11, 12});
  files = ListEventFiles(dir.string());
  CATCH_REQUIRE(files->size() == 2);
  const ino_t before = Inode((*files)[1]);
  cut = TruncateEventFiles(dir.string(), 12);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept == 12);
  CATCH_CHECK(cut->dropped == 0);
  CATCH_CHECK(Inode((*files)[1]) == before);
  CATCH_CHECK(StepsOf((*files)[0]) == Steps{-1, 1, 2, 3, 4, 5, 6});
  CATCH_CHECK(StepsOf((*files)[1]) == Steps{-1, 7, 8, 9, 10, 11, 12});
  fs::remove_all(dir);
}

CATCH_TEST_CASE("files never cut before, and a rollback inside one file, form one history") {
  const fs::path dir = FreshDir("branches");
  // Attempt 1: steps 1..8, rolled back to the checkpoint of step 4, then 5..9; stopped.
  Attempt(dir, {1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8, 9});
  // Attempt 2 resumed from step 7 without cutting (an older Tessera): 8..11.
  Attempt(dir, {8, 9, 10, 11});
  auto cut = TruncateEventFiles(dir.string(), 10);
  CATCH_REQUIRE(cut.ok());
  auto files = ListEventFiles(dir.string());
  CATCH_REQUIRE(files->size() == 2);
  CATCH_CHECK(StepsOf((*files)[0]) == Steps{-1, 1, 2, 3, 4, 5, 6, 7});
  CATCH_CHECK(StepsOf((*files)[1]) == Steps{-1, 8, 9, 10});
  CATCH_CHECK(cut->kept == 10);
  CATCH_CHECK(cut->dropped == 7);  // 5 6 7 8 of the first branch, 8 9 of attempt 1, 11
  fs::remove_all(dir);
}

CATCH_TEST_CASE("a torn last record (a writer killed mid-write) is dropped; the rest stays readable") {
  const fs::path dir = FreshDir("torn");
  Attempt(dir, {1, 2, 3});
  auto files = ListEventFiles(dir.string());
  CATCH_REQUIRE(files->size() == 1);
  {
    std::string half;
    tessera::tensorboard::AppendFramedRecord("a record the writer never finished", &half);
    std::ofstream out((*files)[0], std::ios::app | std::ios::binary);
    out << half.substr(0, half.size() / 2);
  }
  // A temporary of a rewrite that a crash interrupted is not an event file.
  std::ofstream((*files)[0] + ".tmp.123") << "junk";
  auto cut = TruncateEventFiles(dir.string(), 3);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept == 3);
  CATCH_CHECK(cut->unreadable == 1);
  CATCH_CHECK(StepsOf((*files)[0]) == Steps{-1, 1, 2, 3});
  CATCH_CHECK(ListEventFiles(dir.string())->size() == 1);
  fs::remove_all(dir);
}

CATCH_TEST_CASE("a directory without event files, or none at all, is an empty history") {
  const fs::path dir = FreshDir("empty");
  auto missing = TruncateEventFiles(dir.string(), 5);
  CATCH_REQUIRE(missing.ok());
  CATCH_CHECK(missing->kept + missing->dropped + missing->unreadable == 0);
  fs::create_directories(dir);
  std::ofstream(dir / "metrics.jsonl") << "{\"step\": 1}\n";
  auto none = TruncateEventFiles(dir.string(), 5);
  CATCH_REQUIRE(none.ok());
  CATCH_CHECK(none->kept == 0);
  fs::remove_all(dir);
}
