// Local sweep execution (local_runner.h): posix_spawn of each run with its output redirected,
// signal forwarding, progress with elapsed time and ETA, outcome.json after each run.
#include "tools/sweep/local_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "tools/sweep/outcome.h"

extern char** environ;

namespace tessera::sweep {
namespace {

// Signal handlers can only reach process-wide state: the signal received, and the run to pass
// it to. Set and cleared by SignalForwarding around each run.
std::atomic<int> g_pending_signal{0};
std::atomic<pid_t> g_child{0};

void OnSignal(int sig) {
  g_pending_signal.store(sig);
  const pid_t child = g_child.load();
  if (child > 0) ::kill(child, sig);
}

// Installs the forwarding handlers for the lifetime of a sweep and restores the old ones.
class SignalForwarding {
 public:
  SignalForwarding() {
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR, and the loop notices the signal
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &old_[i]);
    g_pending_signal.store(0);
  }
  ~SignalForwarding() {
    g_child.store(0);
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGUSR1};
  std::array<struct sigaction, 3> old_{};
};

int64_t NowUnix() { return static_cast<int64_t>(std::time(nullptr)); }

std::string Clock(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                   : absl::StrFormat("%d:%02d", s / 60, s % 60);
}

struct Spawned {
  int exit_code = -1;
  std::string error;  // why it could not start
};

// Starts `command` with stdout and stderr appended to `log`, stdin from /dev/null, in its own
// process group, and waits for it.
Spawned SpawnAndWait(const RunCommand& command, const std::string& log) {
  Spawned result;
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.push_back(*e);
  env_storage.insert(env_storage.end(), command.env.begin(), command.env.end());
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_storage = command.argv;
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);

  pid_t pid = 0;
  const bool in_path = command.argv[0].find('/') == std::string::npos;
  const int rc = in_path ? posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data())
                         : posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    result.error = absl::StrCat("could not start '", command.argv[0], "': ", std::strerror(rc));
    return result;
  }
  g_child.store(pid);
  // A signal that arrived between the check in the caller and here has not been passed on.
  if (const int sig = g_pending_signal.load(); sig != 0) ::kill(pid, sig);
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, 0);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      result.error = absl::StrCat("waitpid: ", std::strerror(errno));
      g_child.store(0);
      return result;
    }
  }
  g_child.store(0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

struct FinishedRun {
  OutcomeRecord record;
  double seconds = 0;
};

// Runs one run to its end: its folder, the attempt line in stdout.log, the process, and its
// outcome.json.
absl::StatusOr<FinishedRun> RunOne(const SweepSpec& spec, const SweepRun& run,
                                   const LaunchSettings& settings) {
  TS_RETURN_IF_ERROR(MakeDirs(run.run_dir));
  std::remove((run.run_dir + "/outcome.json").c_str());
  const RunCommand command = LocalRunCommand(spec, run, settings);
  const std::string log = run.run_dir + "/stdout.log";
  const int64_t start = NowUnix();
  {
    std::ofstream out(log, std::ios::app);
    out << kAttemptMarker << " of run " << run.name << " at " << IsoTimeUtc(start) << ": "
        << FormatCommand(command) << "\n";
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", log, "'"));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Spawned spawned = SpawnAndWait(command, log);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Classification c = ClassifyOutcome(spawned.exit_code, run.run_dir);
  if (!spawned.error.empty()) c.reason = spawned.error;
  OutcomeRecord record{run.name, spawned.exit_code, c.outcome, c.reason, start, NowUnix()};
  TS_RETURN_IF_ERROR(WriteOutcomeFile(run.run_dir, record));
  return FinishedRun{std::move(record), seconds};
}

}  // namespace

absl::StatusOr<LocalSweepSummary> RunSweepLocally(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                                                  const LaunchSettings& settings, std::FILE* progress) {
  LocalSweepSummary summary;
  std::vector<const SweepRun*> todo;
  for (const SweepRun& run : runs) {
    auto previous = ReadOutcomeFile(run.run_dir);
    if (previous.ok() && previous->outcome == Outcome::kCompleted) {
      ++summary.skipped;
    } else {
      todo.push_back(&run);
    }
  }
  std::fprintf(progress, "[sweep] %s: %zu runs, %lld completed earlier, %zu to run\n", spec.name.c_str(),
               runs.size(), static_cast<long long>(summary.skipped), todo.size());
  std::fflush(progress);

  SignalForwarding forwarding;
  const auto sweep_start = std::chrono::steady_clock::now();
  double run_seconds = 0;
  for (size_t i = 0; i < todo.size(); ++i) {
    const SweepRun& run = *todo[i];
    if (const int sig = g_pending_signal.load(); sig != 0) {
      std::fprintf(progress, "[sweep] stopped by %s before run %s; rerun the sweep to continue\n",
                   strsignal(sig), run.name.c_str());
      summary.interrupted = true;
      break;
    }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - sweep_start).count();
    const std::string eta =
        i == 0 ? "?" : Clock(run_seconds / static_cast<double>(i) * static_cast<double>(todo.size() - i));
    std::fprintf(progress,
                 "[sweep] run %lld/%zu %s: started (%zu of %zu to run now; elapsed %s, ETA %s); output in "
                 "%s/stdout.log\n",
                 static_cast<long long>(run.index + 1), runs.size(), run.name.c_str(), i + 1, todo.size(),
                 Clock(elapsed).c_str(), eta.c_str(), run.run_dir.c_str());
    std::fflush(progress);

    TS_ASSIGN_OR_RETURN(const FinishedRun done, RunOne(spec, run, settings));
    run_seconds += done.seconds;
    if (done.record.outcome == Outcome::kCompleted) {
      ++summary.completed;
    } else {
      ++summary.not_completed;
    }
    const OutcomeRecord& r = done.record;
    std::fprintf(progress, "[sweep] run %lld/%zu %s: %s (exit %d) in %.1f s%s%s\n",
                 static_cast<long long>(run.index + 1), runs.size(), run.name.c_str(), OutcomeName(r.outcome),
                 r.exit_code, done.seconds, r.reason.empty() ? "" : ": ", r.reason.c_str());
    std::fflush(progress);
    if (const int sig = g_pending_signal.load(); sig != 0) {
      std::fprintf(
          progress,
          "[sweep] stopped by %s after run %s; rerun the sweep to continue (completed runs are skipped)\n",
          strsignal(sig), run.name.c_str());
      summary.interrupted = true;
      break;
    }
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - sweep_start).count();
  std::fprintf(progress, "[sweep] %s: %lld completed now, %lld not completed, %lld skipped; %s\n",
               spec.name.c_str(), static_cast<long long>(summary.completed),
               static_cast<long long>(summary.not_completed), static_cast<long long>(summary.skipped),
               Clock(total).c_str());
  std::fflush(progress);
  return summary;
}

}  // namespace tessera::sweep
