// The layout checks of `tessera train`'s start-up, without running anything (layout_check.h).
#include "cli/layout_check.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "model/sharding.h"
#include "parallel/pipeline/simulator.h"

namespace tessera::cli {

namespace pl = parallel::pipeline;

absl::StatusOr<Layout> CheckLayout(const Config& c, int64_t world_arg) {
  const ParallelConfig& p = c.parallel;
  int64_t world = world_arg;
  std::string world_note;
  if (world == 0) {
    world = p.tp * p.cp * p.pp * std::max<int64_t>(p.dp, 1);
    world_note =
        p.dp == 0 ? " (no --world and parallel.dp auto: assuming dp 1)" : " (tp x cp x pp x dp; no --world)";
  }
  TS_ASSIGN_OR_RETURN(parallel::Topology topology,
                      parallel::Topology::Create(world, {p.tp, p.pp, p.dp, p.cp}, p.order));
  const int64_t dp = topology.dims().dp;
  if (world > 1 && p.backend == CommBackend::kLocal) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.backend = local runs one process, but the world has ", world, " ranks"));
  }
  if (c.model.ffn_dim % p.tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.ffn_dim = ", c.model.ffn_dim, " is not a multiple of parallel.tp = ", p.tp,
                     ": tensor parallelism splits the MLP's hidden features over the ranks"));
  }
  const TrainConfig& tr = c.train;
  if (tr.global_batch % (tr.micro_batch * dp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.global_batch = ", tr.global_batch,
        " is not divisible by train.micro_batch x dp = ", tr.micro_batch, " x ", dp, " = ",
        tr.micro_batch * dp, ": each data-parallel rank needs whole micro-batches of the same count"));
  }
  return Layout{std::move(topology), world, world_note, dp, tr.global_batch / (tr.micro_batch * dp)};
}

absl::StatusOr<pl::Schedule> ScheduleOf(const Config& c, int64_t microbatches) {
  const ParallelConfig& p = c.parallel;
  const std::string name = p.pp_schedule.Text();
  if (p.pp_schedule.kind != PipelineScheduleKind::kFile) {
    auto s = pl::MakeSchedule(name, p.pp, microbatches, p.virtual_stages);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.pp_schedule = ", name, " with pp = ", p.pp, ", virtual_stages = ", p.virtual_stages,
          " and ", microbatches, " micro-batches per step: ", s.status().message()));
    }
    return s;
  }
  if (!PathExists(name)) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp_schedule = '", name,
                                                   "': neither a schedule (", pl::kScheduleNames,
                                                   ") nor an existing schedule file"));
  }
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(name));
  auto s = pl::ParseSchedule(text);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", s.status().message()));
  if (s->pp != p.pp || s->v != p.virtual_stages || s->microbatches != microbatches) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the schedule is for pp ", s->pp, ", ", s->v, " virtual stage(s), ",
                     s->microbatches, " micro-batches; the config asks for pp ", p.pp, ", ", p.virtual_stages,
                     ", ", microbatches, " (train.global_batch / (train.micro_batch x dp))"));
  }
  return s;
}

absl::StatusOr<PipelinePlan> CheckPipeline(const Config& c, int64_t microbatches) {
  const ModelConfig& m = c.model;
  const ParallelConfig& p = c.parallel;
  // The trainer's partition (Trainer::SetupModel): parallel.pp_layers, or balanced by the stage
  // costs; it also checks model.recompute_layers against the chunks.
  auto partition = PlanPartition(m, c.train.seq_len, p.pp, p.virtual_stages, p.pp_layers);
  if (!partition.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline partition of model.n_layers = ", m.n_layers, " over parallel.pp = ", p.pp,
                     " x virtual_stages = ", p.virtual_stages, ": ", partition.status().message()));
  }
  PipelinePlan out{*std::move(partition), std::vector<int64_t>(p.pp, 1), std::nullopt, 0.0};
  if (p.pp == 1) return out;
  TS_ASSIGN_OR_RETURN(pl::Schedule schedule, ScheduleOf(c, microbatches));
  auto sim = pl::Simulate(schedule, pl::ActionCosts::PerChunk(p.virtual_stages));
  if (!sim.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp_schedule: ", sim.status().message()));
  }
  out.peak = sim->peak_live;
  out.bubble = sim->bubble_fraction;
  out.schedule = std::move(schedule);
  return out;
}

}  // namespace tessera::cli
