// TruncateMetricsJsonl and TruncateRunHistory (run_history.h): metrics.jsonl is read whole,
// each line parsed as JSON for its "step", and the kept lines written back in their order.
#include "trainer/run_history.h"

#include <cmath>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/status_macros.h"
#include "trainer/tensorboard/event_history.h"

namespace tessera {
namespace {

// The integer "step" of a metrics line, or -1 when the line is not such a JSON object.
int64_t StepOfLine(std::string_view line) {
  absl::StatusOr<JsonValue> value = ParseJson(line);
  if (!value.ok() || value->type != JsonValue::Type::kObject) return -1;
  const JsonValue* step = value->Find("step");
  if (step == nullptr || step->type != JsonValue::Type::kNumber || step->number < 0 ||
      std::floor(step->number) != step->number) {
    return -1;
  }
  return static_cast<int64_t>(step->number);
}

}  // namespace

absl::StatusOr<TrimCounts> TruncateMetricsJsonl(const std::string& path, int64_t last_step) {
  TrimCounts counts;
  if (!PathExists(path)) return counts;
  TS_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  std::vector<std::string_view> lines;
  std::vector<int64_t> steps;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line = std::string_view(text).substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const int64_t step = StepOfLine(line);
    if (step < 0) {
      ++counts.unreadable;
      continue;
    }
    lines.push_back(line);
    steps.push_back(step);
  }
  const std::vector<bool> keep = StepsToKeep(steps, last_step);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!keep[i]) {
      ++counts.dropped;
      continue;
    }
    ++counts.kept;
    out.append(lines[i]);
    out.push_back('\n');
  }
  // Unchanged (nothing dropped and the last line whole): leave the file alone.
  if (out == text) return counts;
  TS_RETURN_IF_ERROR(Annotate(WriteFileAtomic(path, out), "metrics history: "));
  return counts;
}

absl::StatusOr<std::string> TruncateRunHistory(const std::string& run_dir, int64_t last_step) {
  TS_ASSIGN_OR_RETURN(const TrimCounts metrics, TruncateMetricsJsonl(run_dir + "/metrics.jsonl", last_step));
  TS_ASSIGN_OR_RETURN(const TrimCounts events, tensorboard::TruncateEventFiles(run_dir, last_step));
  std::string line = absl::StrCat("cut back to step ", last_step, ": metrics.jsonl kept ", metrics.kept,
                                  " records, dropped ", metrics.dropped);
  if (metrics.unreadable > 0) absl::StrAppend(&line, " (and ", metrics.unreadable, " unreadable)");
  absl::StrAppend(&line, "; TensorBoard kept ", events.kept, " events, dropped ", events.dropped);
  if (events.unreadable > 0) absl::StrAppend(&line, " (and ", events.unreadable, " unreadable)");
  return line;
}

}  // namespace tessera
