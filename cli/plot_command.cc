// `tessera plot`: argument parsing, reading every run's metrics.jsonl, and one gnuplot run with
// a generated script. The PNG is written to a temporary name next to --out and renamed, so an
// existing plot is replaced only by a complete one.
#include "cli/plot_command.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "tools/metrics_jsonl.h"

extern char** environ;

namespace tessera {
namespace {

namespace fs = std::filesystem;

constexpr int kExitRuntimeError = 1;
constexpr int kExitUsage = 2;
constexpr char kDefaultMetrics[] = "loss,eval_loss,tokens_per_s";
// Pixel limits: smaller plots have no room for labels; larger ones are a typo.
constexpr int kMinPixels = 100;
constexpr int kMaxPixels = 20000;
// Series with at most this many points also get point markers, so sparse curves (eval loss,
// short runs, a single point) stay visible.
constexpr size_t kMarkersUpTo = 60;

int Fail(const absl::Status& status, int code) {
  std::fprintf(stderr, "tessera: error: plot: %s\n", std::string(status.message()).c_str());
  return code;
}

struct PlotArgs {
  std::vector<std::string> run_dirs;
  std::string out = "metrics.png";
  std::vector<std::string> metrics;
  bool metrics_given = false;
  int width = 1200;
  int height = 800;
};

absl::StatusOr<int> ParsePixels(const std::string& name, const std::string& value) {
  int pixels = 0;
  if (!absl::SimpleAtoi(value, &pixels) || pixels < kMinPixels || pixels > kMaxPixels) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " expects an integer number of pixels in [",
                                                   kMinPixels, ", ", kMaxPixels, "], got '", value, "'"));
  }
  return pixels;
}

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

absl::StatusOr<PlotArgs> ParsePlotArgs(const std::vector<std::string>& args) {
  PlotArgs out;
  std::string metrics = kDefaultMetrics;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      out.run_dirs.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (name == "out" || name == "metrics" || name == "width" || name == "height") {
      if (i + 1 == args.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    if (name == "out") {
      if (value.empty()) return absl::InvalidArgumentError("--out needs a file name");
      out.out = value;
    } else if (name == "metrics") {
      metrics = value;
      out.metrics_given = true;
    } else if (name == "width") {
      TS_ASSIGN_OR_RETURN(out.width, ParsePixels(name, value));
    } else if (name == "height") {
      TS_ASSIGN_OR_RETURN(out.height, ParsePixels(name, value));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option '", a, "'"));
    }
  }
  if (out.run_dirs.empty()) {
    return absl::InvalidArgumentError("give at least one run directory (one holding metrics.jsonl)");
  }
  TS_ASSIGN_OR_RETURN(out.metrics, ParseMetricList(metrics));
  return out;
}

// One run's points of one metric, finite values only (NaN and infinities cannot be drawn).
struct Series {
  size_t run = 0;
  std::vector<std::pair<int64_t, double>> points;
};

struct Panel {
  std::string metric;
  std::vector<Series> series;
};

// A gnuplot single-quoted string: only the quote itself needs escaping, by doubling it.
std::string GnuplotQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "''";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out + "'";
}

std::string RunLabel(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

std::string GnuplotScript(const PlotArgs& args, const std::vector<Panel>& panels, const std::string& data_dir,
                          const std::string& png_path) {
  std::string s = absl::StrFormat("set terminal pngcairo size %d,%d noenhanced font 'sans,10'\n", args.width,
                                  args.height);
  absl::StrAppend(&s, "set output ", GnuplotQuote(png_path), "\n");
  absl::StrAppend(&s, "set multiplot layout ", panels.size(), ",1\n");
  absl::StrAppend(&s, "set grid\nset key top right noenhanced\nset format y '%g'\nset xlabel 'step'\n");
  // One step axis for every panel, so that panels line up (eval_loss starts later than loss).
  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (const Panel& panel : panels) {
    for (const Series& series : panel.series) {
      for (const auto& point : series.points) {
        first = std::min(first, point.first);
        last = std::max(last, point.first);
      }
    }
  }
  if (first == last) --first, ++last;  // gnuplot refuses an empty range
  absl::StrAppend(&s, "set xrange [", first, ":", last, "]\n");
  for (size_t p = 0; p < panels.size(); ++p) {
    absl::StrAppend(&s, "set title ", GnuplotQuote(panels[p].metric), "\nplot ");
    for (size_t k = 0; k < panels[p].series.size(); ++k) {
      const Series& series = panels[p].series[k];
      const std::string file = absl::StrCat(data_dir, "/p", p, "_r", series.run, ".dat");
      absl::StrAppend(&s, k ? ", \\\n     " : "", GnuplotQuote(file), " using 1:2 with ",
                      series.points.size() <= kMarkersUpTo ? "linespoints pt 7 ps 0.6" : "lines",
                      " lw 1.5 lc ", series.run + 1, " title ",
                      GnuplotQuote(RunLabel(args.run_dirs[series.run])));
    }
    absl::StrAppend(&s, "\n");
  }
  absl::StrAppend(&s, "unset multiplot\nset output\n");
  return s;
}

// Runs `program script` with stdout and stderr into `log_path`; returns its output on failure.
absl::Status RunGnuplot(const std::string& script_path, const std::string& log_path) {
  const char* env = std::getenv("TESSERA_GNUPLOT");
  const std::string program = env && *env ? env : "gnuplot";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> argv = {const_cast<char*>(program.c_str()), const_cast<char*>(script_path.c_str()),
                             nullptr};
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err == ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", program,
                     "' not found: tessera plot draws with gnuplot; install the Debian package gnuplot-nox "
                     "(scripts/setup.sh does) or set TESSERA_GNUPLOT to a gnuplot executable"));
  }
  if (err != 0)
    return absl::InternalError(absl::StrCat("cannot start '", program, "': ", std::strerror(err)));
  int wait_status = 0;
  while (::waitpid(pid, &wait_status, 0) < 0) {
    if (errno != EINTR)
      return absl::InternalError(absl::StrCat("waiting for '", program, "': ", std::strerror(errno)));
  }
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) return absl::OkStatus();
  std::string output = ReadFileToString(log_path).value_or("");
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (output.size() > 2000) output = "..." + output.substr(output.size() - 2000);
  const std::string how = WIFEXITED(wait_status) ? absl::StrCat("exit code ", WEXITSTATUS(wait_status))
                                                 : absl::StrCat("signal ", WTERMSIG(wait_status));
  return absl::InternalError(
      absl::StrCat("'", program, "' failed (", how, ") on script ", script_path, ":\n", output));
}

// Writes the data files and the script into `tmp`, runs gnuplot and renames its PNG to args.out.
absl::Status Draw(const PlotArgs& args, const std::vector<Panel>& panels, const std::string& tmp) {
  for (size_t p = 0; p < panels.size(); ++p) {
    for (const Series& series : panels[p].series) {
      std::string data;
      for (const auto& [step, value] : series.points)
        absl::StrAppend(&data, step, " ", absl::StrFormat("%.17g", value), "\n");
      TS_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(tmp, "/p", p, "_r", series.run, ".dat"), data));
    }
  }
  const std::string png_tmp = absl::StrCat(args.out, ".tmp.", ::getpid());
  const std::string script = absl::StrCat(tmp, "/plot.gp");
  TS_RETURN_IF_ERROR(WriteFileAtomic(script, GnuplotScript(args, panels, tmp, png_tmp)));
  absl::Status status = RunGnuplot(script, tmp + "/gnuplot.log");
  std::error_code ec;
  if (status.ok() && (!fs::is_regular_file(png_tmp, ec) || fs::file_size(png_tmp, ec) == 0)) {
    status = absl::InternalError(absl::StrCat("gnuplot wrote no image to '", png_tmp,
                                              "' (is the directory of --out '", args.out, "' writable?)"));
  }
  if (status.ok()) {
    fs::rename(png_tmp, args.out, ec);
    if (ec)
      status = absl::InternalError(
          absl::StrCat("cannot rename '", png_tmp, "' to '", args.out, "': ", ec.message()));
  }
  if (!status.ok()) fs::remove(png_tmp, ec);
  return status;
}

}  // namespace

int PlotCommand(const std::vector<std::string>& argv) {
  absl::StatusOr<PlotArgs> args = ParsePlotArgs(argv);
  if (!args.ok()) return Fail(args.status(), kExitUsage);

  // Read every run first: all input errors come before anything is drawn.
  std::vector<MetricsLog> logs;
  for (const std::string& dir : args->run_dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return Fail(
          absl::NotFoundError(fs::exists(dir, ec) ? absl::StrCat("'", dir, "' is not a directory")
                                                  : absl::StrCat("run directory '", dir, "' does not exist")),
          kExitUsage);
    }
    const std::string path = RunLabel(dir) + "/metrics.jsonl";
    absl::StatusOr<MetricsLog> log = ReadMetricsJsonl(path);
    if (absl::IsNotFound(log.status())) {
      return Fail(absl::NotFoundError(absl::StrCat("'", path, "' does not exist: is '", dir,
                                                   "' the train.run_dir of a tessera train run?")),
                  kExitUsage);
    }
    if (!log.ok()) return Fail(log.status(), kExitRuntimeError);
    if (log->dropped_unfinished_last_line) {
      std::fprintf(stderr,
                   "tessera: plot: note: %s: left out the unfinished last line (the run may be writing it)\n",
                   path.c_str());
    }
    logs.push_back(*std::move(log));
  }

  std::vector<Panel> panels;
  for (const std::string& metric : args->metrics) {
    Panel panel{metric, {}};
    for (size_t run = 0; run < logs.size(); ++run) {
      Series series{run, {}};
      for (const MetricsRecord& record : logs[run].records) {
        if (std::optional<double> v = record.Get(metric); v && std::isfinite(*v))
          series.points.emplace_back(record.step, *v);
      }
      if (!series.points.empty()) panel.series.push_back(std::move(series));
    }
    if (!panel.series.empty()) {
      panels.push_back(std::move(panel));
      continue;
    }
    if (!args->metrics_given) continue;  // a default metric the runs lack (eval_loss without eval)
    std::set<std::string> known;
    for (const MetricsLog& log : logs) {
      for (const MetricsRecord& record : log.records) {
        for (const auto& [key, value] : record.values) known.insert(key);
      }
    }
    return Fail(absl::InvalidArgumentError(absl::StrCat(
                    "no run has values of metric '", metric,
                    "' (they have: ", known.empty() ? "nothing" : absl::StrJoin(known, ", "), ")")),
                kExitUsage);
  }
  if (panels.empty()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("nothing to plot: the runs have no finite values of ",
                                                        absl::StrJoin(args->metrics, ", "))),
                kExitUsage);
  }

  const char* tmpdir = std::getenv("TMPDIR");
  std::string tmp_template = absl::StrCat(tmpdir && *tmpdir ? tmpdir : "/tmp", "/tessera_plot.XXXXXX");
  if (::mkdtemp(tmp_template.data()) == nullptr) {
    return Fail(absl::InternalError(absl::StrCat("cannot create a temporary directory '", tmp_template,
                                                 "': ", std::strerror(errno))),
                kExitRuntimeError);
  }
  absl::Status status = Draw(*args, panels, tmp_template);
  std::error_code ec;
  fs::remove_all(tmp_template, ec);
  if (!status.ok()) return Fail(status, kExitRuntimeError);
  std::vector<std::string> drawn;
  for (const Panel& panel : panels) drawn.push_back(panel.metric);
  std::printf("wrote %s (%dx%d): %s for %zu run%s\n", args->out.c_str(), args->width, args->height,
              absl::StrJoin(drawn, ", ").c_str(), logs.size(), logs.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace tessera
