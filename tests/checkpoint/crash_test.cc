// Crash safety of checkpoint saves: a writer process (checkpoint_crash_probe, started with
// fork + exec) is killed with SIGKILL at each point of the save protocol of its second
// checkpoint: between the records of its shard file, after the shard file's rename, after the
// manifest's temporary file is durable but before its rename, and after the commit. Before the
// commit, the previous checkpoint must be intact and chosen by FindLatestValid (the unfinished
// step directory is skipped as "not a committed checkpoint"); after it, the new one must be.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
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
