// Reads a run's metrics.jsonl back (for `tessera plot` and other tools): one flat JSON object
// per line with an integer "step" and numeric metrics. Numbers may be NaN, Infinity and
// -Infinity as MetricsJsonLine and Python's json module write them; string, boolean, null and
// nested values are accepted and ignored, so records may grow non-numeric fields later.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

struct MetricsRecord {
  int64_t step = 0;
  std::map<std::string, double> values;  // every numeric member except "step"

  std::optional<double> Get(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? std::nullopt : std::optional<double>(it->second);
  }
};

struct MetricsLog {
  std::vector<MetricsRecord> records;  // in file order
  // The last line had no newline and did not parse: a trainer still writing it, or one killed
  // mid-write. It is left out rather than reported, so a live run can be read.
  bool dropped_unfinished_last_line = false;
};

// Parses one line (without its newline). Errors say what was expected at which column (1-based).
absl::StatusOr<MetricsRecord> ParseMetricsLine(std::string_view line);

// Reads `path`. Empty lines are skipped. Errors name the file, and for a bad line
// "<path>:<line>: ..." with the column. A missing file is NotFound.
absl::StatusOr<MetricsLog> ReadMetricsJsonl(const std::string& path);

}  // namespace tessera
