// `tessera sweep --report`: one row per run of a sweep from its run folder: the outcome
// (RUN_DIR/outcome.json), the steps done and final loss, the best eval loss, the median
// tokens/s and MFU over the logged steps, and the peak memory (RUN_DIR/metrics.jsonl). As a
// table for people and as CSV for spreadsheets and scripts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/sweep/expansion.h"

namespace tessera::sweep {

struct RunReport {
  std::string name;
  std::string overrides;  // OverridesSummary
  std::string run_dir;
  // An outcome name (outcome.h), or "pending" (nothing in the run folder yet) or "unfinished"
  // (output but no outcome.json: still running, or stopped before it could write one).
  std::string outcome;
  std::optional<int> exit_code;
  std::string reason;
  std::optional<int64_t> steps;          // the last logged step
  std::optional<double> final_loss;      // at the last logged step
  std::optional<double> best_eval_loss;  // the lowest eval_loss logged
  std::optional<double> tokens_per_s;    // median over the logged steps
  std::optional<double> mfu;             // median over the logged steps (a fraction)
  std::optional<double> peak_memory_mb;  // the largest memory_mb logged
  std::string note;                      // a problem reading the run folder (a malformed metrics.jsonl, ...)
};

RunReport SummarizeRun(const SweepRun& run);

// Aligned columns, then one line per run that did not complete with its reason.
std::string FormatReportTable(const std::vector<RunReport>& rows);
// RFC 4180 CSV with a header row: run, overrides, outcome, exit_code, steps, final_loss,
// best_eval_loss, tokens_per_s, mfu, peak_memory_mb, reason, run_dir. Missing values are empty.
std::string FormatReportCsv(const std::vector<RunReport>& rows);

}  // namespace tessera::sweep
