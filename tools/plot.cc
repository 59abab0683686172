// Plotting metrics.jsonl curves with gnuplot (plot.h): reading the runs, choosing the panels,
// the generated gnuplot script, and running gnuplot.
#include "tools/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/status_macros.h"

extern char** environ;

namespace tessera {
namespace {

namespace fs = std::filesystem;

// Series with at most this many points also get point markers, so sparse curves (eval loss,
// short runs, a single point) stay visible.
constexpr size_t kMarkersUpTo = 60;

absl::Status InputError(absl::Status status) { return WithExitCode(std::move(status), kExitUsage); }

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

std::string GnuplotScript(const PlotOptions& options, const std::vector<PlotPanel>& panels,
                          const std::string& data_dir, const std::string& png_path) {
  std::string s = absl::StrFormat("set terminal pngcairo size %d,%d noenhanced font 'sans,10'\n",
                                  options.width, options.height);
  absl::StrAppend(&s, "set output ", GnuplotQuote(png_path), "\n");
  absl::StrAppend(&s, "set multiplot layout ", panels.size(), ",1\n");
  absl::StrAppend(&s, "set grid\nset key top right noenhanced\nset format y '%g'\nset xlabel 'step'\n");
  // One step axis for every panel, so that panels line up (eval_loss starts later than loss).
  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (const PlotPanel& panel : panels) {
    for (const PlotSeries& series : panel.series) {
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
      const PlotSeries& series = panels[p].series[k];
      const std::string file = absl::StrCat(data_dir, "/p", p, "_r", series.run, ".dat");
      absl::StrAppend(&s, k ? ", \\\n     " : "", GnuplotQuote(file), " using 1:2 with ",
                      series.points.size() <= kMarkersUpTo ? "linespoints pt 7 ps 0.6" : "lines",
                      " lw 1.5 lc ", series.run + 1, " title ",
                      GnuplotQuote(RunLabel(options.run_dirs[series.run])));
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

// Writes the data files and the script into `tmp`, runs gnuplot and renames its PNG to
// options.out.
absl::Status DrawIn(const PlotOptions& options, const std::vector<PlotPanel>& panels,
                    const std::string& tmp) {
  for (size_t p = 0; p < panels.size(); ++p) {
    for (const PlotSeries& series : panels[p].series) {
      std::string data;
      for (const auto& [step, value] : series.points)
        absl::StrAppend(&data, step, " ", absl::StrFormat("%.17g", value), "\n");
      TS_RETURN_IF_ERROR(WriteFileAtomic(absl::StrCat(tmp, "/p", p, "_r", series.run, ".dat"), data));
    }
  }
  const std::string png_tmp = absl::StrCat(options.out, ".tmp.", ::getpid());
  const std::string script = absl::StrCat(tmp, "/plot.gp");
  TS_RETURN_IF_ERROR(WriteFileAtomic(script, GnuplotScript(options, panels, tmp, png_tmp)));
  absl::Status status = RunGnuplot(script, tmp + "/gnuplot.log");
  std::error_code ec;
  if (status.ok() && (!fs::is_regular_file(png_tmp, ec) || fs::file_size(png_tmp, ec) == 0)) {
    status = absl::InternalError(absl::StrCat("gnuplot wrote no image to '", png_tmp,
                                              "' (is the directory of --out '", options.out, "' writable?)"));
  }
  if (status.ok()) {
    fs::rename(png_tmp, options.out, ec);
    if (ec)
      status = absl::InternalError(
          absl::StrCat("cannot rename '", png_tmp, "' to '", options.out, "': ", ec.message()));
  }
  if (!status.ok()) fs::remove(png_tmp, ec);
  return status;
}

}  // namespace

absl::StatusOr<std::vector<PlotRun>> ReadPlotRuns(const std::vector<std::string>& run_dirs) {
  std::vector<PlotRun> runs;
  for (const std::string& dir : run_dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return InputError(absl::NotFoundError(fs::exists(dir, ec)
                                                ? absl::StrCat("'", dir, "' is not a directory")
                                                : absl::StrCat("run directory '", dir, "' does not exist")));
    }
    const std::string path = RunLabel(dir) + "/metrics.jsonl";
    absl::StatusOr<MetricsLog> log = ReadMetricsJsonl(path);
    if (absl::IsNotFound(log.status())) {
      return InputError(absl::NotFoundError(absl::StrCat("'", path, "' does not exist: is '", dir,
                                                         "' the train.run_dir of a tessera train run?")));
    }
    if (!log.ok()) return log.status();
    runs.push_back({dir, path, *std::move(log)});
  }
  return runs;
}

absl::StatusOr<std::vector<PlotPanel>> PlotPanels(const std::vector<PlotRun>& runs,
                                                  const std::vector<std::string>& metrics,
                                                  bool metrics_given) {
  std::vector<PlotPanel> panels;
  for (const std::string& metric : metrics) {
    PlotPanel panel{metric, {}};
    for (size_t run = 0; run < runs.size(); ++run) {
      PlotSeries series{run, {}};
      for (const MetricsRecord& record : runs[run].log.records) {
        if (std::optional<double> v = record.Get(metric); v && std::isfinite(*v))
          series.points.emplace_back(record.step, *v);
      }
      if (!series.points.empty()) panel.series.push_back(std::move(series));
    }
    if (!panel.series.empty()) {
      panels.push_back(std::move(panel));
      continue;
    }
    if (!metrics_given) continue;  // a default metric the runs lack (eval_loss without eval)
    std::set<std::string> known;
    for (const PlotRun& run : runs) {
      for (const MetricsRecord& record : run.log.records) {
        for (const auto& [key, value] : record.values) known.insert(key);
      }
    }
    return InputError(absl::InvalidArgumentError(
        absl::StrCat("no run has values of metric '", metric,
                     "' (they have: ", known.empty() ? "nothing" : absl::StrJoin(known, ", "), ")")));
  }
  if (panels.empty()) {
    return InputError(absl::InvalidArgumentError(
        absl::StrCat("nothing to plot: the runs have no finite values of ", absl::StrJoin(metrics, ", "))));
  }
  return panels;
}

absl::Status DrawPlot(const PlotOptions& options, const std::vector<PlotPanel>& panels) {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string tmp = absl::StrCat(tmpdir && *tmpdir ? tmpdir : "/tmp", "/tessera_plot.XXXXXX");
  if (::mkdtemp(tmp.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary directory '", tmp, "': ", std::strerror(errno)));
  }
  absl::Status status = DrawIn(options, panels, tmp);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return status;
}

}  // namespace tessera
