// The exit codes of `tessera` commands: one per outcome, so that scripts, the sbatch template and
// `tessera sweep --report` can tell a preempted run (requeue it) from a diverged one (don't).
// docs/troubleshooting.md explains each. A Status carries its exit code as a payload
// (WithExitCode) from where the outcome is known to main().
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"

namespace tessera {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;  // any other failure (I/O, bad data mid-run, a bug)
inline constexpr int kExitUsage = 2;         // bad command line, config, layout or input files
inline constexpr int kExitCommFailure = 3;   // a collective timed out or a peer died (the watchdog)
inline constexpr int kExitDiverged = 4;      // non-finite loss, or more spikes in a row than allowed
inline constexpr int kExitOutOfMemory = 5;   // the device or host ran out of memory
inline constexpr int kExitPreempted = 75;    // signalled (SIGTERM/SIGUSR1); checkpoint saved: requeue

inline constexpr char kExitCodePayload[] = "tessera.dev/exit_code";

inline absl::Status WithExitCode(absl::Status status, int code) {
  status.SetPayload(kExitCodePayload, absl::Cord(std::to_string(code)));
  return status;
}

// A failure every rank of a job reached alike (decided from all-reduced figures, or agreed by a
// collective): `tessera` prints it once, from rank 0, instead of once per rank.
inline constexpr char kOnEveryRankPayload[] = "tessera.dev/on_every_rank";

inline absl::Status OnEveryRank(absl::Status status) {
  status.SetPayload(kOnEveryRankPayload, absl::Cord("1"));
  return status;
}
inline bool IsOnEveryRank(const absl::Status& status) {
  return status.GetPayload(kOnEveryRankPayload).has_value();
}

// The exit code a status asks for, or `fallback` when it names none.
inline int ExitCodeOf(const absl::Status& status, int fallback) {
  if (status.ok()) return kExitOk;
  auto payload = status.GetPayload(kExitCodePayload);
  if (!payload) return fallback;
  return std::stoi(std::string(*payload));
}

}  // namespace tessera
