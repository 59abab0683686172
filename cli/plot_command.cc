// `tessera plot RUN_DIR...`: draws the curves of metrics.jsonl (loss, eval loss, throughput, or
// any metrics asked for) of one or several runs into a PNG, one panel per metric and one line
// per run (tools/plot.h reads the runs and draws with gnuplot). Exit codes: 0 success, 1 a
// malformed metrics.jsonl, gnuplot missing or failing, an unwritable output; 2 a bad command
// line, a run directory or its metrics.jsonl missing, a metric no run has.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "core/exit_codes.h"
#include "core/status_macros.h"
#include "tools/plot.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "plot";
constexpr char kDefaultMetrics[] = "loss,eval_loss,tokens_per_s";
// Pixel limits: smaller plots have no room for labels; larger ones are a typo.
constexpr int kMinPixels = 100;
constexpr int kMaxPixels = 20000;

absl::StatusOr<std::vector<std::string>> ParseMetricList(const std::string& value) {
  std::vector<std::string> metrics;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    std::string name(part);
    if (name.empty())
      return absl::InvalidArgumentError(absl::StrCat("--metrics has an empty name in '", value, "'"));
    if (std::find(metrics.begin(), metrics.end(), name) == metrics.end()) metrics.push_back(name);
  }
  return metrics;
}

absl::StatusOr<PlotOptions> PlotOptionsOf(const Args& args) {
  PlotOptions out;
  out.run_dirs = args.positional();
  if (args.Has("out")) {
    out.out = args.Get("out");
    if (out.out.empty()) return absl::InvalidArgumentError("--out needs a file name");
  }
  const IntRange pixels{kMinPixels, kMaxPixels,
                        absl::StrCat("an integer number of pixels in [", kMinPixels, ", ", kMaxPixels, "]")};
  TS_ASSIGN_OR_RETURN(int64_t width, args.GetInt("width", out.width, pixels));
  TS_ASSIGN_OR_RETURN(int64_t height, args.GetInt("height", out.height, pixels));
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  if (out.run_dirs.empty()) {
    return absl::InvalidArgumentError("give at least one run directory (one holding metrics.jsonl)");
  }
  out.metrics_given = args.Has("metrics");
  TS_ASSIGN_OR_RETURN(out.metrics, ParseMetricList(args.Get("metrics", kDefaultMetrics)));
  return out;
}

int Plot(const Args& args) {
  absl::StatusOr<PlotOptions> options = PlotOptionsOf(args);
  if (!options.ok()) return ReportUsageError(kName, options.status());
  auto runs = ReadPlotRuns(options->run_dirs);
  if (!runs.ok()) return ReportError(kName, runs.status(), ExitCodeOf(runs.status(), kExitRuntimeError));
  for (const PlotRun& run : *runs) {
    if (!run.log.dropped_unfinished_last_line) continue;
    std::fprintf(stderr,
                 "tessera plot: note: %s: left out the unfinished last line (the run may be writing it)\n",
                 run.metrics_path.c_str());
  }
  auto panels = PlotPanels(*runs, options->metrics, options->metrics_given);
  if (!panels.ok())
    return ReportError(kName, panels.status(), ExitCodeOf(panels.status(), kExitRuntimeError));
  if (absl::Status s = DrawPlot(*options, *panels); !s.ok()) {
    return ReportError(kName, s, ExitCodeOf(s, kExitRuntimeError));
  }
  std::vector<std::string> drawn;
  for (const PlotPanel& panel : *panels) drawn.push_back(panel.metric);
  std::printf("wrote %s (%dx%d): %s for %zu run%s\n", options->out.c_str(), options->width, options->height,
              absl::StrJoin(drawn, ", ").c_str(), runs->size(), runs->size() == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace

Command PlotCommand() {
  return {.name = kName,
          .usage =
              "plot RUN_DIR... [--out FILE.png] [--metrics loss,eval_loss,tokens_per_s] [--width 1200] "
              "[--height 800]",
          .summary = "draw metrics.jsonl curves of runs into a PNG\n(gnuplot; see docs/observability.md)",
          .details = "  the gnuplot executable is $TESSERA_GNUPLOT when set, else gnuplot on PATH",
          .args = {.flags = {Flag::Value("out"), Flag::Value("metrics"), Flag::Value("width"),
                             Flag::Value("height")}},
          .run = Plot};
}

}  // namespace tessera::cli
