// `tessera sweep`: runs, schedules and reports a hyper-parameter sweep (docs/sweeps.md), one
// function per mode: the dry run's table and commands, the local run, the Slurm script (and
// sbatch), the report, and recording the outcome of a run that something else started (the
// generated sbatch script calls `tessera sweep --record-outcome`). The sweep files, their
// expansion, the runners and the outcomes live in tools/sweep/.

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "config/config.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "tools/sweep/expansion.h"
#include "tools/sweep/local_runner.h"
#include "tools/sweep/outcome.h"
#include "tools/sweep/report.h"
#include "tools/sweep/run_command.h"
#include "tools/sweep/slurm_script.h"
#include "tools/sweep/sweep_file.h"

extern char** environ;

namespace tessera::cli {
namespace {

using ::tessera::sweep::Classification;
using ::tessera::sweep::ClassifyOutcome;
using ::tessera::sweep::ExpandSweep;
using ::tessera::sweep::FormatCommand;
using ::tessera::sweep::FormatReportCsv;
using ::tessera::sweep::FormatReportTable;
using ::tessera::sweep::IsoTimeUtc;
using ::tessera::sweep::LaunchSettings;
using ::tessera::sweep::LaunchSettingsFromEnvironment;
using ::tessera::sweep::LocalRunCommand;
using ::tessera::sweep::OutcomeName;
using ::tessera::sweep::OutcomeRecord;
using ::tessera::sweep::OverridesSummary;
using ::tessera::sweep::ReadOutcomeFile;
using ::tessera::sweep::ReadSweepFile;
using ::tessera::sweep::RunAssignments;
using ::tessera::sweep::RunReport;
using ::tessera::sweep::RunSweepLocally;
using ::tessera::sweep::SlurmArrayScript;
using ::tessera::sweep::SlurmScriptSettings;
using ::tessera::sweep::SummarizeRun;
using ::tessera::sweep::SweepRun;
using ::tessera::sweep::SweepSpec;
using ::tessera::sweep::WriteOutcomeFile;
using ::tessera::sweep::WriteSlurmArrayScript;

constexpr char kName[] = "sweep";

struct SweepArgs {
  std::string sweep_file;
  bool dry_run = false;
  bool slurm = false;
  bool submit = false;
  bool report = false;
  std::string csv;
  std::string jobs_dir;
  // --record-outcome
  std::string record_run_dir;
  std::string record_name;
  std::optional<int> record_exit_code;
  std::optional<int64_t> record_start;
  std::optional<int64_t> record_end;
};

// An integer flag's value, or nullopt when it was not given.
absl::StatusOr<std::optional<int64_t>> OptionalInt(const Args& args, const std::string& name) {
  if (!args.Has(name)) return std::nullopt;
  TS_ASSIGN_OR_RETURN(int64_t v, args.GetInt(name, 0));
  return v;
}

// The modes and their options, checked for combinations that contradict each other.
absl::StatusOr<SweepArgs> SweepArgsOf(const Args& args) {
  SweepArgs out;
  out.sweep_file = args.positional().empty() ? "" : args.positional()[0];
  out.dry_run = args.Has("dry-run");
  out.slurm = args.Has("slurm");
  out.submit = args.Has("submit");
  out.report = args.Has("report");
  out.csv = args.Get("csv");
  out.jobs_dir = args.Get("jobs-dir");
  out.record_run_dir = args.Get("record-outcome");
  out.record_name = args.Get("name");
  TS_ASSIGN_OR_RETURN(std::optional<int64_t> exit_code, OptionalInt(args, "exit-code"));
  if (exit_code) out.record_exit_code = static_cast<int>(*exit_code);
  TS_ASSIGN_OR_RETURN(out.record_start, OptionalInt(args, "start"));
  TS_ASSIGN_OR_RETURN(out.record_end, OptionalInt(args, "end"));
  if (!out.record_run_dir.empty()) {
    if (!out.record_exit_code) return absl::InvalidArgumentError("--record-outcome needs --exit-code N");
    return out;
  }
  if (out.sweep_file.empty())
    return absl::InvalidArgumentError("no sweep file: tessera sweep SWEEP.yaml ...");
  if (out.submit && !out.slurm) return absl::InvalidArgumentError("--submit goes with --slurm");
  if (!out.jobs_dir.empty() && !out.slurm) return absl::InvalidArgumentError("--jobs-dir goes with --slurm");
  if (!out.csv.empty() && !out.report) return absl::InvalidArgumentError("--csv goes with --report");
  if (out.report && (out.slurm || out.dry_run)) {
    return absl::InvalidArgumentError(
        "--report reads the runs' folders; give it without --slurm and --dry-run");
  }
  if (out.submit && out.dry_run)
    return absl::InvalidArgumentError("--submit and --dry-run contradict each other");
  return out;
}

int RecordOutcome(const SweepArgs& args) {
  const Classification c = ClassifyOutcome(*args.record_exit_code, args.record_run_dir);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::string name = args.record_name;
  if (name.empty()) name = std::filesystem::path(args.record_run_dir).filename().string();
  OutcomeRecord record{name,     *args.record_exit_code,          c.outcome,
                       c.reason, args.record_start.value_or(now), args.record_end.value_or(now)};
  if (absl::Status s = WriteOutcomeFile(args.record_run_dir, record); !s.ok()) {
    return ReportError(kName, s, kExitRuntimeError);
  }
  std::printf("%s: %s (exit %d)%s%s\n", name.c_str(), OutcomeName(c.outcome), record.exit_code,
              c.reason.empty() ? "" : ": ", c.reason.c_str());
  return kExitOk;
}

int DryRun(const SweepSpec& spec, const std::vector<SweepRun>& runs) {
  const LaunchSettings settings = LaunchSettingsFromEnvironment();
  std::printf("sweep %s (%s): %zu runs of %s, %lld rank(s) each, in %s/%s/\n", spec.name.c_str(),
              spec.path.c_str(), runs.size(), spec.base.c_str(), static_cast<long long>(spec.ranks),
              spec.runs_dir.c_str(), spec.name.c_str());
  // Each run's merged config, checked as `tessera train` will check it (without the data).
  std::vector<std::string> status(runs.size());
  std::vector<std::string> problems;
  size_t name_width = 3;
  for (const SweepRun& r : runs) name_width = std::max(name_width, r.name.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    auto config = LoadConfig(spec.base, RunAssignments(spec, runs[i]));
    status[i] = config.ok() ? "ok" : "invalid";
    if (!config.ok()) problems.push_back(absl::StrCat(runs[i].name, ": ", config.status().message()));
    auto previous = ReadOutcomeFile(runs[i].run_dir);
    if (previous.ok()) absl::StrAppend(&status[i], ", ", OutcomeName(previous->outcome), " earlier");
  }
  std::printf("%4s  %-*s  %-6s  %-24s  %s\n", "#", static_cast<int>(name_width), "run", "origin", "config",
              "overrides");
  for (size_t i = 0; i < runs.size(); ++i) {
    std::printf("%4lld  %-*s  %-6s  %-24s  %s\n", static_cast<long long>(runs[i].index),
                static_cast<int>(name_width), runs[i].name.c_str(), runs[i].origin.c_str(), status[i].c_str(),
                OverridesSummary(runs[i]).c_str());
  }
  for (const std::string& p : problems) std::printf("  invalid config: %s\n", p.c_str());
  std::printf("\ncommands (output to RUN_DIR/stdout.log):\n");
  for (const SweepRun& r : runs)
    std::printf("%s\n", FormatCommand(LocalRunCommand(spec, r, settings)).c_str());
  return kExitOk;
}

int Slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs, const SweepArgs& args) {
  namespace fs = std::filesystem;
  SlurmScriptSettings settings;
  settings.tessera = LaunchSettingsFromEnvironment().tessera;
  settings.workdir = fs::current_path().string();
  const std::string jobs =
      args.jobs_dir.empty() ? absl::StrCat(spec.runs_dir, "/", spec.name, "/jobs") : args.jobs_dir;
  settings.jobs_dir = fs::absolute(jobs).lexically_normal().string();
  settings.generated_at = IsoTimeUtc(static_cast<int64_t>(std::time(nullptr)));
  if (args.dry_run) {
    std::fputs(SlurmArrayScript(spec, runs, settings).c_str(), stdout);
    return kExitOk;
  }
  auto path = WriteSlurmArrayScript(spec, runs, settings);
  if (!path.ok()) return ReportError(kName, path.status(), kExitRuntimeError);
  std::printf("wrote %s: a job array of %zu runs, %lld node(s) x %lld task(s) each\n", path->c_str(),
              runs.size(), static_cast<long long>(spec.slurm.nodes),
              static_cast<long long>(spec.slurm.ntasks_per_node));
  if (!args.submit) {
    std::printf("submit it with:  sbatch %s\n(or rerun with --submit); then: tessera sweep %s --report\n",
                path->c_str(), spec.path.c_str());
    return kExitOk;
  }
  std::fflush(stdout);
  std::vector<std::string> argv_storage = {"sbatch", *path};
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (int rc = posix_spawnp(&pid, "sbatch", nullptr, nullptr, argv.data(), environ); rc != 0) {
    return ReportError(kName,
                       absl::InternalError(absl::StrCat("could not run sbatch: ", std::strerror(rc),
                                                        " (is Slurm installed here?)")),
                       kExitRuntimeError);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return ReportError(kName, absl::InternalError("sbatch failed (its message is above)"), kExitRuntimeError);
  return kExitOk;
}

int Report(const std::vector<SweepRun>& runs, const SweepArgs& args) {
  std::vector<RunReport> rows;
  for (const SweepRun& r : runs) rows.push_back(SummarizeRun(r));
  std::fputs(FormatReportTable(rows).c_str(), stdout);
  if (!args.csv.empty()) {
    if (absl::Status s = WriteFileAtomic(args.csv, FormatReportCsv(rows)); !s.ok()) {
      return ReportError(kName, s, kExitRuntimeError);
    }
    std::printf("wrote %s\n", args.csv.c_str());
  }
  return kExitOk;
}

int RunSweep(const Args& argv) {
  auto args = SweepArgsOf(argv);
  if (!args.ok()) return ReportUsageError(kName, args.status());
  if (!args->record_run_dir.empty()) return RecordOutcome(*args);
  auto spec = ReadSweepFile(args->sweep_file);
  if (!spec.ok()) return ReportError(kName, spec.status(), kExitUsage);
  auto runs = ExpandSweep(*spec);
  if (!runs.ok()) return ReportError(kName, runs.status(), kExitUsage);
  if (args->report) return Report(*runs, *args);
  if (args->slurm) return Slurm(*spec, *runs, *args);
  if (args->dry_run) return DryRun(*spec, *runs);
  auto summary = RunSweepLocally(*spec, *runs, LaunchSettingsFromEnvironment(), stdout);
  if (!summary.ok()) return ReportError(kName, summary.status(), kExitRuntimeError);
  if (summary->interrupted) return kExitPreempted;
  if (summary->not_completed > 0) {
    std::printf("some runs did not complete: tessera sweep %s --report\n", spec->path.c_str());
    return kExitRuntimeError;
  }
  return kExitOk;
}

}  // namespace

Command SweepCommand() {
  return {
      .name = kName,
      .usage = "sweep SWEEP.yaml [--dry-run] [--slurm [--submit] [--jobs-dir DIR]] [--report [--csv FILE]]",
      .summary =
          "run a sweep of trainings one after another (or as\na Slurm job array), resume it, report its "
          "outcomes\n(docs/sweeps.md)",
      .details =
          "  sweep --record-outcome RUN_DIR --exit-code N [--start UNIX] [--end UNIX] [--name RUN]\n"
          "       classifies a finished run and writes RUN_DIR/outcome.json (the generated sbatch\n"
          "       script calls it)\n"
          "  exit codes: 0 every run completed (now or earlier), 1 some did not (or a file could not\n"
          "  be written, or sbatch failed), 75 stopped by a signal (rerun to resume), 2 bad arguments\n"
          "  or sweep file",
      .args = {.flags = {Flag::Bool("dry-run"), Flag::Bool("slurm"), Flag::Bool("submit"),
                         Flag::Bool("report"), Flag::Value("csv"), Flag::Value("jobs-dir"),
                         Flag::Value("record-outcome"), Flag::Value("name"), Flag::Value("exit-code"),
                         Flag::Value("start"), Flag::Value("end")},
               .max_positionals = 1,
               .extra_positional_note = "(one sweep file)"},
      .run = RunSweep};
}

}  // namespace tessera::cli
