// `tessera plot RUN_DIR...`: draws the curves of metrics.jsonl (loss, eval loss, throughput, or
// any metrics asked for) of one or several runs into a PNG, one panel per metric and one line
// per run. gnuplot (Debian package gnuplot-nox) does the drawing; this command reads and checks
// the metrics, writes gnuplot's data and script into a temporary directory and runs it.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// Takes the arguments after "plot"; returns the exit code (0 success, 1 runtime failure: a
// malformed metrics.jsonl, gnuplot missing or failing, an unwritable output; 2 bad command line:
// unknown option, no run directory, a run directory or its metrics.jsonl missing, a metric no
// run has). The gnuplot executable is $TESSERA_GNUPLOT when set, else `gnuplot` on PATH.
int PlotCommand(const std::vector<std::string>& args);

}  // namespace tessera

// Lines for the top-level usage text of trainer/main.cc.
#define TESSERA_PLOT_COMMAND_USAGE                                                               \
  "  plot RUN_DIR... [--out FILE.png] [--metrics loss,eval_loss,tokens_per_s] [--width 1200]\n"  \
  "       [--height 800]                         draw metrics.jsonl curves of runs into a PNG\n" \
  "                                              (gnuplot; see docs/observability.md)\n"
