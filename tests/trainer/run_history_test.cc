// Tests of trainer/run_history: metrics.jsonl cut back to a resumed checkpoint's step (the
// records the loop writes, a torn last line, rollbacks), unchanged files left alone, and the
// summary line of TruncateRunHistory over both logs.
#include "trainer/run_history.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "tests/catch_compat.h"
#include "trainer/tensorboard/tensorboard_writer.h"

namespace fs = std::filesystem;
using tessera::TruncateMetricsJsonl;
using tessera::TruncateRunHistory;

namespace {

fs::path FreshDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("tessera_history_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A line as MetricsJsonLine writes it.
std::string Line(int64_t step, double loss) {
  return absl::StrCat("{\"step\": ", step, ", \"loss\": ", loss, ", \"lr\": 0.001, \"grad_norm\": 1.5}\n");
}

std::string Lines(std::initializer_list<std::pair<int64_t, double>> records) {
  std::string out;
  for (const auto& [step, loss] : records) out += Line(step, loss);
  return out;
}

void Write(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }
std::string Read(const fs::path& path) { return *tessera::ReadFileToString(path.string()); }

ino_t Inode(const fs::path& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_ino;
}

}  // namespace

CATCH_TEST_CASE("metrics.jsonl keeps the records up to the checkpoint's step, byte for byte") {
  const fs::path dir = FreshDir("cut");
  const fs::path path = dir / "metrics.jsonl";
  Write(path, Lines({{1, 9.5}, {2, 9.25}, {3, 9.0}, {4, 8.75}, {5, 8.5}}));
  auto cut = TruncateMetricsJsonl(path.string(), 3);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept == 3);
  CATCH_CHECK(cut->dropped == 2);
  CATCH_CHECK(Read(path) == Lines({{1, 9.5}, {2, 9.25}, {3, 9.0}}));
  // The resumed attempt appends after it: one record per step.
  { std::ofstream(path, std::ios::app) << Lines({{4, 8.7}, {5, 8.4}}); }
  CATCH_CHECK(Read(path) == Lines({{1, 9.5}, {2, 9.25}, {3, 9.0}, {4, 8.7}, {5, 8.4}}));
  // Nothing to drop: the file is not rewritten.
  const ino_t before = Inode(path);
  cut = TruncateMetricsJsonl(path.string(), 5);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept == 5);
  CATCH_CHECK(cut->dropped == 0);
  CATCH_CHECK(Inode(path) == before);
  fs::remove_all(dir);
}

CATCH_TEST_CASE("a torn last line and a history never cut before come out as one clean history") {
  const fs::path dir = FreshDir("torn");
  const fs::path path = dir / "metrics.jsonl";
  // Attempt 1 logged 1..4 and was killed mid-line; attempt 2 resumed from step 2 and appended
  // without cutting (an older Tessera); now a resume from step 4.
  Write(path, Lines({{1, 9.5}, {2, 9.25}, {3, 9.0}, {4, 8.75}}) + "{\"step\": 5, \"lo" + "\n" +
                  Lines({{3, 8.9}, {4, 8.6}, {5, 8.3}}));
  auto cut = TruncateMetricsJsonl(path.string(), 4);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->unreadable == 1);
  CATCH_CHECK(cut->kept == 4);
  CATCH_CHECK(cut->dropped == 3);
  CATCH_CHECK(Read(path) == Lines({{1, 9.5}, {2, 9.25}, {3, 8.9}, {4, 8.6}}));
  // A last line without its newline (the writer died before it) is a torn record too.
  Write(path, Lines({{1, 9.5}}) + "{\"step\": 2, \"loss\": 9.2");
  cut = TruncateMetricsJsonl(path.string(), 2);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->unreadable == 1);
  CATCH_CHECK(Read(path) == Lines({{1, 9.5}}));
  fs::remove_all(dir);
}

CATCH_TEST_CASE("a missing metrics.jsonl is an empty history") {
  const fs::path dir = FreshDir("missing");
  auto cut = TruncateMetricsJsonl((dir / "metrics.jsonl").string(), 10);
  CATCH_REQUIRE(cut.ok());
  CATCH_CHECK(cut->kept + cut->dropped + cut->unreadable == 0);
  CATCH_CHECK_FALSE(fs::exists(dir / "metrics.jsonl"));
  fs::remove_all(dir);
}

CATCH_TEST_CASE("TruncateRunHistory cuts both logs of a run directory and says what it kept") {
  const fs::path dir = FreshDir("run");
  Write(dir / "metrics.jsonl", Lines({{1, 9.5}, {2, 9.25}, {3, 9.0}}));
  {
    auto writer = tessera::tensorboard::TensorBoardWriter::Open(dir.string());
    CATCH_REQUIRE(writer.ok());
    for (int step = 1; step <= 3; ++step) CATCH_REQUIRE((*writer)->AddScalar("loss", step, 9.0).ok());
  }
  auto line = TruncateRunHistory(dir.string(), 2);
  CATCH_REQUIRE(line.ok());
  CATCH_CHECK(*line ==
              "cut back to step 2: metrics.jsonl kept 2 records, dropped 1; TensorBoard kept 2 events, "
              "dropped 1");
  CATCH_CHECK(Read(dir / "metrics.jsonl") == Lines({{1, 9.5}, {2, 9.25}}));
  fs::remove_all(dir);
}
