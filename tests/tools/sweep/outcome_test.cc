// Tests of trainer/sweep/outcome: the outcome of every exit code of trainer/exit_codes.h, a
// generic failure refined from synthetic run folders (a NaN loss in metrics.jsonl, the trainer's
// divergence message, an out-of-memory message, a watchdog report), only the last attempt
// counting, and outcome.json written and read back.
#include "tools/sweep/outcome.h"

#include <string>

#include "tests/catch_compat.h"
#include "tests/tools/sweep/sweep_test_util.h"

using tessera::sweep::ClassifyOutcome;
using tessera::sweep::kAttemptMarker;
using tessera::sweep::Outcome;
using tessera::sweep::OutcomeName;
using tessera::sweep::OutcomeRecord;
using tessera::sweep::ReadOutcomeFile;
using tessera::sweep::WriteOutcomeFile;
using tessera::sweep::testing::TempDir;

namespace {

std::string Attempt(const std::string& output) {
  return std::string(kAttemptMarker) + " of run r at 2025-01-01T00:00:00Z: tessera train x.yaml\n" + output;
}

}  // namespace

CATCH_TEST_CASE("outcome: the specific exit codes decide") {
  TempDir dir;
  dir.Write("stdout.log",
            Attempt("tessera: error: model.n_heads = 8 is not divisible by model.n_kv_heads = 3\n"));
  CATCH_CHECK(ClassifyOutcome(0, dir.path()).outcome == Outcome::kCompleted);
  const auto config = ClassifyOutcome(2, dir.path());
  CATCH_CHECK(config.outcome == Outcome::kConfigError);
  CATCH_CHECK(config.reason == "model.n_heads = 8 is not divisible by model.n_kv_heads = 3");
  CATCH_CHECK(ClassifyOutcome(3, dir.path()).outcome == Outcome::kCommTimeout);
  CATCH_CHECK(ClassifyOutcome(4, dir.path()).outcome == Outcome::kDiverged);
  CATCH_CHECK(ClassifyOutcome(5, dir.path()).outcome == Outcome::kOutOfMemory);
  CATCH_CHECK(ClassifyOutcome(75, dir.path()).outcome == Outcome::kPreempted);
  const auto failed = ClassifyOutcome(1, dir.path());
  CATCH_CHECK(failed.outcome == Outcome::kFailed);
  CATCH_CHECK(failed.reason == "model.n_heads = 8 is not divisible by model.n_kv_heads = 3");
}

CATCH_TEST_CASE("outcome: a generic failure is refined from the run folder") {
  {
    // A generic failure whose message says the run diverged (the trainer exited 1 so before exit code 4).
    TempDir dir;
    dir.Write("stdout.log",
              Attempt("I step 1\ntessera: error: the loss became nan at step 1 (grad_norm 0.000000): "
                      "training diverged; lower train.lr (now 0.003) or raise train.warmup_steps\n"));
    const auto c = ClassifyOutcome(1, dir.path());
    CATCH_CHECK(c.outcome == Outcome::kDiverged);
    CATCH_CHECK(c.reason.rfind("the loss became nan at step 1", 0) == 0);
  }
  {
    // A NaN in the last logged step, whatever the log says.
    TempDir dir;
    dir.Write("metrics.jsonl", "{\"step\": 10, \"loss\": 3.5}\n{\"step\": 20, \"loss\": NaN}\n");
    const auto c = ClassifyOutcome(1, dir.path());
    CATCH_CHECK(c.outcome == Outcome::kDiverged);
    CATCH_CHECK(c.reason == "loss nan at step 20 (metrics.jsonl)");
  }
  {
    TempDir dir;
    dir.Write("stdout.log", Attempt("terminate called after throwing an instance of 'c10::OutOfMemoryError'\n"
                                    "  what():  CUDA out of memory. Tried to allocate 2.00 GiB\n"));
    const auto c = ClassifyOutcome(134, dir.path());
    CATCH_CHECK(c.outcome == Outcome::kOutOfMemory);
    CATCH_CHECK(c.reason == "what():  CUDA out of memory. Tried to allocate 2.00 GiB");
  }
  {
    // No stdout.log (a run started by hand): the rank logs.
    TempDir dir;
    dir.Write("logs/rank-00000.log",
              "E rank 0: collective timed out: waited 3.0 s in all_reduce #12 (...)\n");
    const auto c = ClassifyOutcome(1, dir.path());
    CATCH_CHECK(c.outcome == Outcome::kCommTimeout);
    CATCH_CHECK(c.reason.find("all_reduce #12") != std::string::npos);
  }
  {
    TempDir dir;
    dir.Write("stdout.log", Attempt("tessera: error: data.train: /d/text.bin: has 1000 bytes but ...\n"));
    const auto c = ClassifyOutcome(1, dir.path());
    CATCH_CHECK(c.outcome == Outcome::kFailed);
    CATCH_CHECK(c.reason == "data.train: /d/text.bin: has 1000 bytes but ...");
    const auto killed = ClassifyOutcome(137, dir.path());
    CATCH_CHECK(killed.outcome == Outcome::kFailed);
    CATCH_CHECK(killed.reason.find("killed by signal 9") == 0);
    CATCH_CHECK(ClassifyOutcome(-1, dir.path()).outcome == Outcome::kFailed);
  }
}

CATCH_TEST_CASE("outcome: only the last attempt's messages count") {
  TempDir dir;
  dir.Write("stdout.log",
            Attempt("tessera: error: CUDA out of memory\n") + Attempt("tessera: error: disk full\n"));
  const auto c = ClassifyOutcome(1, dir.path());
  CATCH_CHECK(c.outcome == Outcome::kFailed);
  CATCH_CHECK(c.reason == "disk full");
}

CATCH_TEST_CASE("outcome: outcome.json round trip and missing or malformed files") {
  TempDir dir;
  OutcomeRecord r{"s-001_lr0.1", 4, Outcome::kDiverged, "loss \"nan\"\tat step 3", 1700000000, 1700000042};
  CATCH_REQUIRE(WriteOutcomeFile(dir.path() + "/run", r).ok());
  auto back = ReadOutcomeFile(dir.path() + "/run");
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->run == r.run);
  CATCH_CHECK(back->exit_code == 4);
  CATCH_CHECK(back->outcome == Outcome::kDiverged);
  CATCH_CHECK(back->reason == r.reason);
  CATCH_CHECK(back->start_unix == r.start_unix);
  CATCH_CHECK(back->end_unix == r.end_unix);
  CATCH_CHECK(std::string(OutcomeName(back->outcome)) == "diverged");
  CATCH_CHECK(ReadOutcomeFile(dir.path() + "/none").status().code() == absl::StatusCode::kNotFound);
  dir.Write("bad/outcome.json", "{\"outcome\": \"exploded\", \"exit_code\": 1}");
  auto bad = ReadOutcomeFile(dir.path() + "/bad");
  CATCH_CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CATCH_CHECK(std::string(bad.status().message()).find("unknown outcome 'exploded'") != std::string::npos);
}
