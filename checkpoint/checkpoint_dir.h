// The checkpoint directory: step directories `step-NNNNNNNN` (8 digits, more when needed), of
// which only those holding a valid manifest.pb are checkpoints. Finding the newest usable one
// (falling back past damaged ones, saying which and why), and retention: deleting older
// checkpoints and leftovers of crashed saves once a newer checkpoint is committed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.h"

namespace tessera::checkpoint {

// "step-00001234".
std::string StepDirName(int64_t step);
// DIR/step-00001234.
std::string StepDirPath(const std::string& dir, int64_t step);

struct StepDir {
  int64_t step = 0;
  std::string path;
};
// The step directories under `dir`, newest (highest step) first, committed or not. A missing
// `dir` has none.
absl::StatusOr<std::vector<StepDir>> ListStepDirs(const std::string& dir);

enum class Verify {
  kStructure,  // manifest valid, shard files present with valid headers and the recorded lengths
  kChecksums,  // and every tensor's and blob's checksum verifies (reads all the data)
};

struct SkippedCheckpoint {
  std::string path;
  absl::Status reason;
};
struct FoundCheckpoint {
  std::string path;  // the step directory
  int64_t step = 0;
  // Newer step directories passed over, newest first, with why (also logged as warnings).
  std::vector<SkippedCheckpoint> skipped;
};

// The newest step directory of `dir` that passes `verify`. NotFound when none does; the message
// lists what was skipped and why. kChecksums reads the whole checkpoint: in a job, let one rank
// choose and broadcast the step.
absl::StatusOr<FoundCheckpoint> FindLatestValid(const std::string& dir, Verify verify = Verify::kChecksums);
// `path` as given on a command line: a step directory (it has a manifest.pb, or its name is
// step-N) is used as is, after `verify`; anything else is a checkpoint directory searched with
// FindLatestValid.
absl::StatusOr<FoundCheckpoint> ResolveCheckpoint(const std::string& path,
                                                  Verify verify = Verify::kChecksums);

// Removes a step directory: its manifest first (so a half-removed directory is never taken for
// a checkpoint), then the rest.
absl::Status RemoveStepDir(const std::string& path);
// Removes the files of a committed step directory that `manifest` does not reference
// (temporary files, and shard files of an earlier crashed attempt at the same step).
absl::Status RemoveUnreferencedFiles(const std::string& step_dir, const Manifest& manifest);
// Called once step `committed_step` is committed: removes committed checkpoints beyond the
// `keep` newest (keep <= 0 keeps all; the one just committed is always kept), and step
// directories without a manifest older than `committed_step` (crashed saves). Returns the
// removed paths.
absl::StatusOr<std::vector<std::string>> ApplyRetention(const std::string& dir, int keep,
                                                        int64_t committed_step);

}  // namespace tessera::checkpoint
