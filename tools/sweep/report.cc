// Sweep reports (report.h): reading each run folder and formatting the table and the CSV.
#include "tools/sweep/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/file_util.h"
#include "tools/metrics_jsonl.h"
#include "tools/sweep/outcome.h"

namespace tessera::sweep {
namespace {

std::optional<double> Median(std::vector<double> values) {
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::string Csv(const std::string& field) {
  if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string CsvNumber(const std::optional<double>& v) { return v ? absl::StrFormat("%.6g", *v) : ""; }

}  // namespace

RunReport SummarizeRun(const SweepRun& run) {
  RunReport r;
  r.name = run.name;
  r.overrides = OverridesSummary(run);
  r.run_dir = run.run_dir;
  auto outcome = ReadOutcomeFile(run.run_dir);
  if (outcome.ok()) {
    r.outcome = OutcomeName(outcome->outcome);
    r.exit_code = outcome->exit_code;
    r.reason = outcome->reason;
  } else if (absl::IsNotFound(outcome.status())) {
    const bool started =
        PathExists(run.run_dir + "/stdout.log") || PathExists(run.run_dir + "/metrics.jsonl");
    r.outcome = started ? "unfinished" : "pending";
  } else {
    r.outcome = "unfinished";
    r.note = std::string(outcome.status().message());
  }
  auto log = ReadMetricsJsonl(run.run_dir + "/metrics.jsonl");
  if (log.ok() && !log->records.empty()) {
    std::vector<double> tokens, mfu;
    for (const MetricsRecord& rec : log->records) {
      if (auto v = rec.Get("tokens_per_s"); v && std::isfinite(*v)) tokens.push_back(*v);
      if (auto v = rec.Get("mfu"); v && std::isfinite(*v)) mfu.push_back(*v);
      if (auto v = rec.Get("eval_loss"); v && std::isfinite(*v)) {
        r.best_eval_loss = r.best_eval_loss ? std::min(*r.best_eval_loss, *v) : *v;
      }
      if (auto v = rec.Get("memory_mb"); v && std::isfinite(*v)) {
        r.peak_memory_mb = r.peak_memory_mb ? std::max(*r.peak_memory_mb, *v) : *v;
      }
    }
    r.steps = log->records.back().step;
    r.final_loss = log->records.back().Get("loss");
    r.tokens_per_s = Median(tokens);
    r.mfu = Median(mfu);
  } else if (!log.ok() && !absl::IsNotFound(log.status())) {
    r.note = std::string(log.status().message());
  }
  return r;
}

std::string FormatReportTable(const std::vector<RunReport>& rows) {
  const std::vector<std::string> header = {"run",       "overrides", "outcome", "steps",   "final loss",
                                           "best eval", "tok/s",     "MFU",     "peak MiB"};
  std::vector<std::vector<std::string>> cells;
  for (const RunReport& r : rows) {
    cells.push_back({r.name, r.overrides.empty() ? "-" : r.overrides, r.outcome,
                     r.steps ? absl::StrCat(*r.steps) : "-",
                     r.final_loss ? absl::StrFormat("%.4f", *r.final_loss) : "-",
                     r.best_eval_loss ? absl::StrFormat("%.4f", *r.best_eval_loss) : "-",
                     r.tokens_per_s ? absl::StrFormat("%.0f", *r.tokens_per_s) : "-",
                     r.mfu ? absl::StrFormat("%.1f%%", 100 * *r.mfu) : "-",
                     r.peak_memory_mb ? absl::StrFormat("%.0f", *r.peak_memory_mb) : "-"});
  }
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& row : cells) width[c] = std::max(width[c], row[c].size());
  }
  // Text columns (run, overrides, outcome) align left, numbers right.
  auto line = [&](const std::vector<std::string>& row) {
    std::string out;
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      absl::StrAppend(&out, c == 0 ? "" : "  ", c < 3 ? row[c] + pad : pad + row[c]);
    }
    out.erase(out.find_last_not_of(' ') + 1);
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& row : cells) out += line(row);
  std::string notes;
  for (const RunReport& r : rows) {
    if (r.outcome != "completed" && r.outcome != "pending" && !r.reason.empty()) {
      absl::StrAppend(&notes, "  ", r.name, ": ", r.outcome,
                      r.exit_code ? absl::StrCat(" (exit ", *r.exit_code, ")") : "", ": ", r.reason, "\n");
    }
    if (!r.note.empty()) absl::StrAppend(&notes, "  ", r.name, ": ", r.note, "\n");
  }
  if (!notes.empty()) absl::StrAppend(&out, "\n", notes);
  return out;
}

std::string FormatReportCsv(const std::vector<RunReport>& rows) {
  std::string out =
      "run,overrides,outcome,exit_code,steps,final_loss,best_eval_loss,tokens_per_s,mfu,peak_memory_mb,"
      "reason,run_dir\n";
  for (const RunReport& r : rows) {
    const std::vector<std::string> fields = {Csv(r.name),
                                             Csv(r.overrides),
                                             Csv(r.outcome),
                                             r.exit_code ? absl::StrCat(*r.exit_code) : "",
                                             r.steps ? absl::StrCat(*r.steps) : "",
                                             CsvNumber(r.final_loss),
                                             CsvNumber(r.best_eval_loss),
                                             CsvNumber(r.tokens_per_s),
                                             CsvNumber(r.mfu),
                                             CsvNumber(r.peak_memory_mb),
                                             Csv(r.reason),
                                             Csv(r.run_dir)};
    absl::StrAppend(&out, absl::StrJoin(fields, ","), "\n");
  }
  return out;
}

}  // namespace tessera::sweep
