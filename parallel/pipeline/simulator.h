// Runs a pipeline schedule "on paper": checks that it is a complete, consistent training step
// and times it with per-action costs, honouring every rank's order, the data dependencies and the
// execution contract of schedule.h (an exchange, i.e. a run of adjacent communication actions,
// completes once every peer has posted its side). No tensors, no communication.
//
// Timing: a compute action starts when its rank is free (its inputs are already on the rank:
// the checks demand the receive or the local producer earlier in the list) and lasts its cost.
// An exchange is posted when its rank gets to it; each transfer ends at max(post times of its two
// sides) + the communication cost; the rank resumes when the exchange's last transfer ends.
// Busy time is compute time only; waiting and communicating count as idle.
//
// Liveness: the activation of a micro-batch on a chunk is live from the start of its F until the
// end of its last backward action: B, or W when the backward is split (W still needs the stored
// inputs of the layer); in a forward-only schedule, only during its F. The peak is counted in chunk
// activations (with v > 1 each holds 1/v of a stage's layers) and follows from the list order alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/pipeline/schedule.h"

namespace tessera::parallel::pipeline {

// Cost of one action on one chunk, in any time unit.
struct ActionCosts {
  double forward = 1.0;
  double backward = 2.0;         // B, the full backward
  double backward_input = 1.0;   // I
  double backward_weight = 1.0;  // W
  double comm = 0.0;             // one transfer
  // The defaults for a rank holding v chunks: the stage's costs above divided by v.
  static ActionCosts PerChunk(int64_t v);
  double Of(ActionKind kind) const;
};

struct TimedAction {
  Action action;
  double start = 0;
  double end = 0;
};

struct SimulationResult {
  double makespan = 0;
  std::vector<double> busy;                        // per rank: compute time
  std::vector<double> idle;                        // per rank: makespan - busy
  double bubble_fraction = 0;                      // sum(idle) / (pp * makespan)
  std::vector<int64_t> peak_live;                  // per rank: most chunk activations live at once
  std::vector<std::vector<TimedAction>> timeline;  // per rank, in list order
};

// The static checks, also for an executor before it runs a schedule: sizes; communication only
// between ranks holding neighbouring model chunks; every send matched by a receive on its peer in
// the same order, and the reverse; every micro-batch forwarded and backwarded (B, or I then W)
// exactly once per chunk (a forward-only schedule: forwarded once, and nothing but F, SA and
// RA); data before use. Errors name the rank (and line, for a parsed schedule),
// the action's position (1-based) and token.
absl::Status CheckSchedule(const Schedule& schedule);

// CheckSchedule, then the timing above. A deadlock is an error naming every blocked rank, the
// action it is stuck at and the peer action it waits for.
absl::StatusOr<SimulationResult> Simulate(const Schedule& schedule, const ActionCosts& costs);

// One row per rank, one cell per time tick (the largest tick dividing every cost); a compute
// action shows its kind and micro-batch ("F3", "B3--"), idle time shows '.'. With v == 2 chunk 1
// is in lower case; with v > 2 the chunk leads ("1F3"). Ends with a legend line.
std::string RenderTimeline(const Schedule& schedule, const SimulationResult& result);

}  // namespace tessera::parallel::pipeline
