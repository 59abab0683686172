// The checks `tessera train` makes of a layout before its first step, without printing anything,
// shared by `tessera validate` (one layout, explained) and `tessera plan` (many layouts, ranked):
// the rank grid against the world size, the batch split over data-parallel ranks, the tensor-
// parallel divisibility of the MLP, the pipeline partition and the schedule (generated or read
// from its file, and simulated for its bubble and the micro-batches each stage holds at its peak).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "parallel/pipeline/partition.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/topology.h"

namespace tessera::cli {

// The rank layout and the batch split over it.
struct Layout {
  parallel::Topology topology;
  int64_t world = 0;
  std::string world_note;  // how the world size was chosen when none was given
  int64_t dp = 0;
  int64_t microbatches = 0;  // per step and data-parallel rank
};

// `world` 0: tp x pp x dp of the config (dp auto counts as 1).
absl::StatusOr<Layout> CheckLayout(const Config& c, int64_t world);

// The pipeline schedule the trainer would run: by name, or read from the file that
// parallel.pp_schedule names (which must match pp, virtual_stages and the micro-batch count).
absl::StatusOr<parallel::pipeline::Schedule> ScheduleOf(const Config& c, int64_t microbatches);

// The partition of the layers over the stages and, per stage, the micro-batches in flight at the
// schedule's peak (counted in chunks under virtual stages); with pp > 1 also the schedule and its
// simulated bubble (backward = 2 x forward, free communication).
struct PipelinePlan {
  parallel::pipeline::Partition partition;
  std::vector<int64_t> peak;
  std::optional<parallel::pipeline::Schedule> schedule;
  double bubble = 0;
};
absl::StatusOr<PipelinePlan> CheckPipeline(const Config& c, int64_t microbatches);

}  // namespace tessera::cli
