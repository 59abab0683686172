// Crash safety of checkpoint saves: a writer process (checkpoint_crash_probe, started with
// fork + exec) is killed with SIGKILL at each point of the save protocol of its second
// checkpoint: between the records of its shard file, after the shard file's rename, after the
// manifest's temporary file is durable but before its rename, and after the commit. Before the
// commit, the previous checkpoint must be intact and chosen by FindLatestValid (the unfinished
// step directory is skipped as "not a committed checkpoint"); after it, the new one must be.
// Then 20 kills at random moments of a save of 16 MB (inside a write, a checksum, an fsync, a
// rename): each must leave step 1 or step 2 as the newest valid checkpoint, with its values.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/tensor_slices.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;

namespace {

// Runs the probe with `args`; returns the raw wait status.
int RunProbe(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    std::string probe = CHECKPOINT_CRASH_PROBE;
    argv.push_back(probe.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    // No launcher variables: the probe is a world of one.
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMI_SIZE",
                          "SLURM_PROCID", "SLURM_NTASKS", "WORLD_SIZE", "RANK"}) {
      unsetenv(v);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// Starts the probe in "run" mode, waits for it to announce step 2 and, if `delay` is set,
// SIGKILLs it that long after; returns the seconds from the announcement to its end.
double RunAndKill(const std::string& dir, std::optional<std::chrono::microseconds> delay) {
  int out[2];
  CATCH_REQUIRE(pipe(out) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMI_SIZE",
                          "SLURM_PROCID", "SLURM_NTASKS", "WORLD_SIZE", "RANK"}) {
      unsetenv(v);
    }
    execl(CHECKPOINT_CRASH_PROBE, CHECKPOINT_CRASH_PROBE, dir.c_str(), "run", nullptr);
    _exit(127);
  }
  close(out[1]);
  char line[32] = {};
  const ssize_t n = read(out[0], line, sizeof(line) - 1);  // "saving step 2"
  const auto announced = std::chrono::steady_clock::now();
  close(out[0]);
  CATCH_REQUIRE(n > 0);
  if (delay) {
    std::this_thread::sleep_for(*delay);
    kill(pid, SIGKILL);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!delay) CATCH_REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - announced).count();
}

void KilledAt(const std::string& point, bool async, int64_t expected_step) {
  CATCH_INFO("kill at " << point << (async ? " (async)" : ""));
  TempDir dir("crash");
  const int status = RunProbe(async ? std::vector<std::string>{dir.path(), "kill", point, "0", "async"}
                                    : std::vector<std::string>{dir.path(), "kill", point});
  CATCH_REQUIRE(WIFSIGNALED(status));
  CATCH_REQUIRE(WTERMSIG(status) == SIGKILL);
  auto found = FindLatestValid(dir.path(), Verify::kChecksums);
  CATCH_REQUIRE(found.ok());
  CATCH_CHECK(found->step == expected_step);
  if (expected_step == 1) {
    CATCH_REQUIRE(found->skipped.size() == 1);
    CATCH_CHECK(found->skipped[0].path == StepDirPath(dir.path(), 2));
    CATCH_CHECK(std::string(found->skipped[0].reason.message()).find("not a committed checkpoint") !=
                std::string::npos);
  } else {
    CATCH_CHECK(found->skipped.empty());
  }
  // The survivor's data is exactly what its step saved (the probe's own checker).
  CATCH_CHECK(RunProbe({dir.path(), "expect", std::to_string(expected_step)}) == 0);
}

}  // namespace

CATCH_TEST_CASE("SIGKILL during a save never damages the previous checkpoint") {
  for (const char* point : {"record:0", "record:2", "shard_committed", "manifest_before_rename"}) {
    KilledAt(point, /*async=*/false, 1);
  }
  KilledAt("committed", /*async=*/false, 2);
}

CATCH_TEST_CASE("SIGKILL during an async save never damages the previous checkpoint") {
  KilledAt("record:1", /*async=*/true, 1);
  KilledAt("manifest_before_rename", /*async=*/true, 1);
  KilledAt("committed", /*async=*/true, 2);
}

CATCH_TEST_CASE("the crash probe fails when its kill point does not exist") {
  TempDir dir("crash-none");
  const int status = RunProbe({dir.path(), "kill", "no-such-point"});
  CATCH_CHECK(WIFEXITED(status));
  CATCH_CHECK(WEXITSTATUS(status) == 3);
  CATCH_CHECK(RunProbe({dir.path(), "expect", "2"}) == 0);
}

CATCH_TEST_CASE("SIGKILL at 20 random moments of a save leaves the last good checkpoint chosen") {
  // How long step 2's save takes on this machine, uninterrupted (the faster of two runs); the
  // kills land anywhere in [0, 1.1 x that], so most hit the save and a few its end.
  double save_s = 1e9;
  for (int run = 0; run < 2; ++run) {
    TempDir dir("crash-timing");
    save_s = std::min(save_s, RunAndKill(dir.path(), std::nullopt));
  }
  std::mt19937 rng(2026);
  std::uniform_real_distribution<double> when(0.0, 1.1 * save_s);
  int before_commit = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const auto delay = std::chrono::microseconds(static_cast<int64_t>(when(rng) * 1e6));
    CATCH_INFO("trial " << trial << ": SIGKILL " << delay.count() << " us into a " << save_s << " s save");
    TempDir dir("crash-random");
    RunAndKill(dir.path(), delay);
    auto found = FindLatestValid(dir.path(), Verify::kChecksums);
    CATCH_REQUIRE(found.ok());
    CATCH_REQUIRE((found->step == 1 || found->step == 2));
    before_commit += found->step == 1;
    // Its values are exactly what that step saved (the probe checks "big" too when present).
    CATCH_CHECK(RunProbe({dir.path(), "expect", std::to_string(found->step)}) == 0);
  }
  std::printf("random SIGKILLs: %d of 20 before the commit (save of step 2: %.3f s)\n", before_commit,
              save_s);
  // The kills did interrupt saves (not only finished ones): with 20 uniform draws over 1.1 x
  // the save, none landing before the commit would mean the test missed what it is for.
  CATCH_CHECK(before_commit > 0);
}
