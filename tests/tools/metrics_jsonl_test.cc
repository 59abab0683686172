// Tests of trainer/metrics_jsonl: lines as MetricsJsonLine writes them (NaN, Infinity), values
// it ignores, errors with line and column, and the unfinished last line of a live run.
#include "tools/metrics_jsonl.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "tests/catch_compat.h"

namespace fs = std::filesystem;
using tessera::ParseMetricsLine;
using tessera::ReadMetricsJsonl;

namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  fs::path dir = fs::temp_directory_path() / ("tessera_metrics_jsonl_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

}  // namespace

CATCH_TEST_CASE("metrics line: numbers, NaN and infinities kept, other values ignored") {
  auto r = ParseMetricsLine(
      "{\"step\": 12, \"loss\": 2.5, \"lr\": 3e-4, \"grad_norm\": NaN, \"mfu\": Infinity, \"x\": -Infinity,"
      " \"skipped_steps\": 0, \"neg\": -1.25E+2, \"name\": \"a \\\"q\\\" \\u00fc\", \"ok\": true, \"none\": "
      "null,"
      " \"nested\": {\"a\": [1, {\"b\": \"]\"}]}, \"list\": []}");
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(r->step == 12);
  CATCH_CHECK(r->values.size() == 7);
  CATCH_CHECK(*r->Get("loss") == 2.5);
  CATCH_CHECK(*r->Get("lr") == 3e-4);
  CATCH_CHECK(std::isnan(*r->Get("grad_norm")));
  CATCH_CHECK(*r->Get("mfu") == INFINITY);
  CATCH_CHECK(*r->Get("x") == -INFINITY);
  CATCH_CHECK(*r->Get("skipped_steps") == 0);
  CATCH_CHECK(*r->Get("neg") == -125);
  CATCH_CHECK(!r->Get("name"));
  CATCH_CHECK(!r->Get("step"));
}

CATCH_TEST_CASE("metrics line errors say what was expected where") {
  auto missing_step = ParseMetricsLine("{\"loss\": 1}");
  CATCH_CHECK(std::string(missing_step.status().message()).find("\"step\"") != std::string::npos);
  auto fractional = ParseMetricsLine("{\"step\": 1.5}");
  CATCH_CHECK(std::string(fractional.status().message()) == "column 10: \"step\" must be an integer");
  auto bad_value = ParseMetricsLine("{\"step\": 1, \"loss\": nan}");
  CATCH_CHECK(std::string(bad_value.status().message()).rfind("column 21: expected a value", 0) == 0);
  auto trailing = ParseMetricsLine("{\"step\": 1} x");
  CATCH_CHECK(std::string(trailing.status().message()) == "column 13: unexpected text after the object");
  CATCH_CHECK_FALSE(ParseMetricsLine("[1, 2]").ok());
  CATCH_CHECK_FALSE(ParseMetricsLine("{\"step\": 1, }").ok());
  CATCH_CHECK_FALSE(ParseMetricsLine("{\"step\": 1 \"loss\": 2}").ok());
  CATCH_CHECK_FALSE(ParseMetricsLine("{\"step\": 01.}").ok());
}

CATCH_TEST_CASE("metrics.jsonl: blank lines skipped, bad line named by file and number") {
  const std::string good =
      WriteTemp("good.jsonl", "{\"step\": 1, \"loss\": 3}\n\n{\"step\": 2, \"loss\": 2}\n");
  auto log = ReadMetricsJsonl(good);
  CATCH_REQUIRE(log.ok());
  CATCH_CHECK(log->records.size() == 2);
  CATCH_CHECK(log->records[1].step == 2);
  CATCH_CHECK(!log->dropped_unfinished_last_line);

  const std::string bad =
      WriteTemp("bad.jsonl", "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": }\n{\"step\": 3}\n");
  auto error = ReadMetricsJsonl(bad);
  CATCH_REQUIRE_FALSE(error.ok());
  CATCH_CHECK(std::string(error.status().message()).rfind(bad + ":2: column 21: expected a value", 0) == 0);

  auto missing = ReadMetricsJsonl(good + ".missing");
  CATCH_CHECK(absl::IsNotFound(missing.status()));
  CATCH_CHECK(std::string(missing.status().message()).find(good + ".missing") != std::string::npos);
}

CATCH_TEST_CASE("metrics.jsonl: an unfinished last line is left out, a finished bad one is not") {
  const std::string live = WriteTemp("live.jsonl", "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"lo");
  auto log = ReadMetricsJsonl(live);
  CATCH_REQUIRE(log.ok());
  CATCH_CHECK(log->records.size() == 1);
  CATCH_CHECK(log->dropped_unfinished_last_line);
  // A complete last line without its newline still counts.
  const std::string unterminated =
      WriteTemp("unterminated.jsonl", "{\"step\": 1, \"loss\": 3}\n{\"step\": 2}");
  auto log2 = ReadMetricsJsonl(unterminated);
  CATCH_REQUIRE(log2.ok());
  CATCH_CHECK(log2->records.size() == 2);
  CATCH_CHECK(!log2->dropped_unfinished_last_line);
  fs::remove_all(fs::path(live).parent_path());
}
