// What became of a run: its outcome from the exit code of `tessera train` (trainer/exit_codes.h)
// and the evidence in its run folder, and RUN_DIR/outcome.json, written after every run (by
// `tessera sweep` for local runs, by the generated sbatch script for Slurm runs).
//
// The exit code decides where it is specific (2 config_error, 3 comm_timeout, 4 diverged,
// 5 out_of_memory, 75 preempted). A generic failure (1, or death by a signal) is refined from
// the run folder: a non-finite last loss in metrics.jsonl, or the last attempt's messages in
// RUN_DIR/stdout.log (else the rank logs): out of memory, a collective that timed out, a loss
// that diverged. Anything else is `failed`, with the last error line as the reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::sweep {

enum class Outcome { kCompleted, kDiverged, kOutOfMemory, kCommTimeout, kPreempted, kConfigError, kFailed };

// "completed", "diverged", "out_of_memory", "comm_timeout", "preempted", "config_error", "failed".
const char* OutcomeName(Outcome outcome);
std::optional<Outcome> OutcomeFromName(const std::string& name);

// Each attempt of a run appends this line (and a timestamp and the command) to RUN_DIR/stdout.log
// before it starts, so the classifier reads only the last attempt.
inline constexpr char kAttemptMarker[] = "==== tessera sweep: attempt";

struct Classification {
  Outcome outcome = Outcome::kFailed;
  std::string reason;  // one line: the error message, or what the evidence was
};

// `exit_code`: the process's exit status, 128 + N for death by signal N (as shells report it),
// or -1 when it could not be started.
Classification ClassifyOutcome(int exit_code, const std::string& run_dir);

struct OutcomeRecord {
  std::string run;  // the run's name
  int exit_code = 0;
  Outcome outcome = Outcome::kFailed;
  std::string reason;
  int64_t start_unix = 0;  // seconds since the epoch
  int64_t end_unix = 0;
};

// RUN_DIR/outcome.json: {"run", "exit_code", "outcome", "reason", "start", "end" (UTC, ISO 8601),
// "start_unix", "end_unix", "duration_s"}; written atomically.
absl::Status WriteOutcomeFile(const std::string& run_dir, const OutcomeRecord& record);
// NotFound when the run has none; InvalidArgument (naming the file) when it does not parse.
absl::StatusOr<OutcomeRecord> ReadOutcomeFile(const std::string& run_dir);

// "2025-01-31T12:00:05Z".
std::string IsoTimeUtc(int64_t unix_seconds);

}  // namespace tessera::sweep
