// Tests of the training loop's components that decide on their own (trainer/): the divergence
// guard's skip, stop and rollback decisions and its checkpointed counters, the metrics sink's
// logging steps and its duration text. (Whole runs: tests/trainer/run_outcomes_test.py.)
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/exit_codes.h"
#include "tests/catch_compat.h"
#include "trainer/checkpoint_policy.h"
#include "trainer/divergence_guard.h"
#include "trainer/metrics_sink.h"

using tessera::DivergenceGuard;
using tessera::StepMetrics;

namespace {

StepMetrics Step(double loss, double grad_norm = 1.0) {
  StepMetrics m;
  m.loss = loss;
  m.grad_norm = grad_norm;
  return m;
}

}  // namespace

CATCH_TEST_CASE("the divergence guard skips non-finite steps and spikes, then stops or rolls back") {
  tessera::TrainConfig train;
  train.spike_factor = 3.0;
  train.max_skips = 1;
  DivergenceGuard guard(train, /*logs=*/false);
  StepMetrics m = Step(5.0);
  for (int i = 0; i < 9; ++i) CATCH_CHECK(guard.AcceptUpdate(i, &m));
  m = Step(100.0);
  CATCH_CHECK(guard.AcceptUpdate(9, &m));  // the spike test needs 10 accepted steps
  m = Step(5.0);
  CATCH_CHECK(guard.AcceptUpdate(10, &m));
  m = Step(60.0);  // > 3 x the mean of the 11 accepted (about 13.2)
  CATCH_CHECK_FALSE(guard.AcceptUpdate(11, &m));
  CATCH_CHECK(m.skipped_steps == 1);
  CATCH_CHECK(guard.AfterStep() == DivergenceGuard::Verdict::kGoOn);  // 1 in a row: allowed
  m = Step(5.0, std::nan(""));
  CATCH_CHECK_FALSE(guard.AcceptUpdate(12, &m));
  CATCH_CHECK(m.skipped_steps == 2);
  CATCH_CHECK(guard.AfterStep() == DivergenceGuard::Verdict::kStop);  // train.on_divergence: stop
  const absl::Status error = guard.DivergedError(m, 96);
  CATCH_CHECK(tessera::ExitCodeOf(error, 1) == tessera::kExitDiverged);
  CATCH_CHECK(tessera::IsOnEveryRank(error));
  CATCH_CHECK(std::string(error.message()).find("2 updates in a row skipped") != std::string::npos);
  CATCH_CHECK(std::string(error.message()).find("around sample 96") != std::string::npos);

  // Rollback: at most kMaxRollbacks times; the counters come back from the checkpoint, but
  // skips are never uncounted and the run of skips is over.
  train.on_divergence = tessera::DivergencePolicy::kRollback;
  DivergenceGuard rolling(train, false);
  tessera::LoopState saved;
  rolling.SaveTo(&saved);
  for (int r = 0; r < DivergenceGuard::kMaxRollbacks; ++r) {
    for (int i = 0; i < 2; ++i) {
      m = Step(std::nan(""));
      rolling.AcceptUpdate(i, &m);
    }
    CATCH_CHECK(rolling.AfterStep() == DivergenceGuard::Verdict::kRollBack);
    rolling.RestoreAfterRollback(saved);
    CATCH_CHECK(rolling.AfterStep() == DivergenceGuard::Verdict::kGoOn);
  }
  CATCH_CHECK(m.skipped_steps == 2 * DivergenceGuard::kMaxRollbacks);
  for (int i = 0; i < 2; ++i) {
    m = Step(std::nan(""));
    rolling.AcceptUpdate(i, &m);
  }
  CATCH_CHECK(rolling.AfterStep() == DivergenceGuard::Verdict::kStop);
}

CATCH_TEST_CASE("TESSERA_FAULT_NAN_GRAD_STEPS poisons each listed step once") {
  ::setenv("TESSERA_FAULT_NAN_GRAD_STEPS", "2,5,x", 1);
  DivergenceGuard guard(tessera::TrainConfig{}, false);
  ::unsetenv("TESSERA_FAULT_NAN_GRAD_STEPS");
  CATCH_CHECK_FALSE(guard.TakeInjectedFault(0));
  CATCH_CHECK(guard.TakeInjectedFault(1));        // step 2 (1-based)
  CATCH_CHECK_FALSE(guard.TakeInjectedFault(1));  // once: a rollback re-runs it clean
  CATCH_CHECK(guard.TakeInjectedFault(4));
}

CATCH_TEST_CASE("the metrics sink logs every log_every-th, the first, the last and evaluated steps") {
  tessera::Config config;
  config.train.log_every = 5;
  config.train.steps = 12;
  auto sink = tessera::MetricsSink::Open(config, /*is_logger=*/false);  // writes nothing
  CATCH_REQUIRE(sink.ok());
  std::vector<int64_t> logged;
  for (int64_t step = 1; step <= 12; ++step) {
    StepMetrics m;
    m.step = step;
    m.total_steps = 12;
    if (step == 7) m.eval_loss = 1.0;
    if ((*sink)->ShouldLog(m)) logged.push_back(step);
    CATCH_CHECK((*sink)->MaybeLog(m).ok());
  }
  CATCH_CHECK(logged == std::vector<int64_t>{1, 5, 7, 10, 12});
  CATCH_CHECK(tessera::DurationText(0) == "0s");
  CATCH_CHECK(tessera::DurationText(45.4) == "45s");
  CATCH_CHECK(tessera::DurationText(83) == "1m23s");
  CATCH_CHECK(tessera::DurationText(7500) == "2h05m");
}

CATCH_TEST_CASE("checkpoint.async gets a channel its background collectives may use, or a clear refusal") {
  using tessera::AsyncCheckpointChannel;
  using tessera::CheckpointChannel;
  using tessera::parallel::Backend;
  // Synchronous saves, one process, the local backend: the world's own communicator.
  CATCH_CHECK(*AsyncCheckpointChannel(false, 8, Backend::kMpi, true, false) ==
              CheckpointChannel::kWorldSplit);
  CATCH_CHECK(*AsyncCheckpointChannel(true, 1, Backend::kNccl, false, false) ==
              CheckpointChannel::kWorldSplit);
  CATCH_CHECK(*AsyncCheckpointChannel(true, 4, Backend::kLocal, false, false) ==
              CheckpointChannel::kWorldSplit);
  // MPI: beside training's collectives only at MPI_THREAD_MULTIPLE.
  CATCH_CHECK(*AsyncCheckpointChannel(true, 4, Backend::kMpi, true, true) == CheckpointChannel::kWorldSplit);
  const auto serialized = AsyncCheckpointChannel(true, 4, Backend::kMpi, true, false);
  CATCH_REQUIRE_FALSE(serialized.ok());
  CATCH_CHECK(serialized.status().code() == absl::StatusCode::kFailedPrecondition);
  CATCH_CHECK(std::string(serialized.status().message()).find("MPI_THREAD_MULTIPLE") != std::string::npos);
  CATCH_CHECK(std::string(serialized.status().message()).find("checkpoint.async: false") !=
              std::string::npos);
  // NCCL: the reports go over MPI, never over a second NCCL communicator.
  CATCH_CHECK(*AsyncCheckpointChannel(true, 4, Backend::kNccl, true, true) == CheckpointChannel::kMpi);
  const auto no_mpi = AsyncCheckpointChannel(true, 4, Backend::kNccl, false, false);
  CATCH_REQUIRE_FALSE(no_mpi.ok());
  CATCH_CHECK(std::string(no_mpi.status().message()).find("no MPI") != std::string::npos);
  const auto nccl_serialized = AsyncCheckpointChannel(true, 4, Backend::kNccl, true, false);
  CATCH_REQUIRE_FALSE(nccl_serialized.ok());
  CATCH_CHECK(std::string(nccl_serialized.status().message()).find("without MPI_THREAD_MULTIPLE") !=
              std::string::npos);
}
