// Plots of runs' metrics.jsonl curves (what `tessera plot` draws): one panel per metric, one
// line per run, into a PNG. gnuplot (Debian package gnuplot-nox) does the drawing: DrawPlot
// writes gnuplot's data and script into a temporary directory and runs it; the PNG is written to
// a temporary name next to the output and renamed, so an existing plot is replaced only by a
// complete one. The gnuplot executable is $TESSERA_GNUPLOT when set, else `gnuplot` on PATH.
//
// Errors of the input (a run directory or its metrics.jsonl missing, a metric asked for that no
// run has, nothing to plot) carry exit code 2 (core/exit_codes.h, WithExitCode); the others (a
// malformed metrics.jsonl, gnuplot missing or failing, an unwritable output) carry none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/metrics_jsonl.h"

namespace tessera {

struct PlotOptions {
  std::vector<std::string> run_dirs;
  std::string out = "metrics.png";
  std::vector<std::string> metrics;
  // The metrics were asked for: one that no run has is an error (a default one is left out).
  bool metrics_given = false;
  int width = 1200;
  int height = 800;
};

struct PlotRun {
  std::string dir;
  std::string metrics_path;  // dir/metrics.jsonl
  MetricsLog log;
};

// Reads every run's metrics.jsonl, in order; all input errors come before anything is drawn.
absl::StatusOr<std::vector<PlotRun>> ReadPlotRuns(const std::vector<std::string>& run_dirs);

// One run's points of one metric, finite values only (NaN and infinities cannot be drawn).
struct PlotSeries {
  size_t run = 0;  // index into the runs
  std::vector<std::pair<int64_t, double>> points;
};

struct PlotPanel {
  std::string metric;
  std::vector<PlotSeries> series;
};

// A panel for each of `metrics` that some run has finite values of.
absl::StatusOr<std::vector<PlotPanel>> PlotPanels(const std::vector<PlotRun>& runs,
                                                  const std::vector<std::string>& metrics,
                                                  bool metrics_given);

// Draws `panels` of the runs in options.run_dirs into options.out.
absl::Status DrawPlot(const PlotOptions& options, const std::vector<PlotPanel>& panels);

}  // namespace tessera
