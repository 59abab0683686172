// Tests of trainer/sweep/report: a run's row from synthetic run folders (medians, best eval
// loss, peak memory, pending and unfinished runs) and the CSV's quoting.
#include "tools/sweep/report.h"

#include <string>

#include "tests/catch_compat.h"
#include "tests/tools/sweep/sweep_test_util.h"
#include "tools/sweep/outcome.h"

using tessera::sweep::FormatReportCsv;
using tessera::sweep::FormatReportTable;
using tessera::sweep::Outcome;
using tessera::sweep::OutcomeRecord;
using tessera::sweep::RunReport;
using tessera::sweep::SummarizeRun;
using tessera::sweep::SweepRun;
using tessera::sweep::WriteOutcomeFile;
using tessera::sweep::testing::TempDir;

CATCH_TEST_CASE("report: a completed run's row from metrics.jsonl and outcome.json") {
  TempDir dir;
  dir.Write("done/metrics.jsonl",
            "{\"step\": 1, \"loss\": 9.0, \"tokens_per_s\": 100, \"mfu\": 0.1, \"memory_mb\": 500}\n"
            "{\"step\": 2, \"loss\": 8.0, \"tokens_per_s\": 300, \"mfu\": 0.3, \"memory_mb\": 700, "
            "\"eval_loss\": 8.5}\n"
            "{\"step\": 3, \"loss\": 7.0, \"tokens_per_s\": 200, \"mfu\": 0.2, \"memory_mb\": 600, "
            "\"eval_loss\": 8.25}\n");
  CATCH_REQUIRE(WriteOutcomeFile(dir.path() + "/done", {"a", 0, Outcome::kCompleted, "", 10, 20}).ok());
  SweepRun run{0, "s-000_lr0.1", dir.path() + "/done", "grid", {{"train.lr", "0.1", 3}}};
  const RunReport r = SummarizeRun(run);
  CATCH_CHECK(r.outcome == "completed");
  CATCH_CHECK(r.overrides == "lr=0.1");
  CATCH_CHECK(*r.exit_code == 0);
  CATCH_CHECK(*r.steps == 3);
  CATCH_CHECK(*r.final_loss == 7.0);
  CATCH_CHECK(*r.best_eval_loss == 8.25);
  CATCH_CHECK(*r.tokens_per_s == 200);
  CATCH_CHECK(*r.mfu == 0.2);
  CATCH_CHECK(*r.peak_memory_mb == 700);
}

CATCH_TEST_CASE("report: pending and unfinished and failed runs with table notes and CSV quoting") {
  TempDir dir;
  dir.Write("started/stdout.log", "I step 1\n");
  CATCH_REQUIRE(
      WriteOutcomeFile(dir.path() + "/bad", {"c", 2, Outcome::kConfigError, "key 'x', \"y\"", 10, 11}).ok());
  const RunReport pending = SummarizeRun({0, "p", dir.path() + "/never", "list", {}});
  const RunReport started = SummarizeRun({1, "u", dir.path() + "/started", "list", {}});
  const RunReport bad = SummarizeRun({2, "c", dir.path() + "/bad", "list", {{"model.n_kv_heads", "3", 1}}});
  CATCH_CHECK(pending.outcome == "pending");
  CATCH_CHECK(!pending.steps);
  CATCH_CHECK(started.outcome == "unfinished");
  CATCH_CHECK(bad.outcome == "config_error");
  const std::string table = FormatReportTable({pending, started, bad});
  CATCH_CHECK(table.find("run  overrides     outcome") == 0);
  CATCH_CHECK(table.find("  c: config_error (exit 2): key 'x', \"y\"\n") != std::string::npos);
  const std::string csv = FormatReportCsv({bad});
  CATCH_CHECK(csv.find("c,n_kv_heads=3,config_error,2,,,,,,,\"key 'x', \"\"y\"\"\",") != std::string::npos);
}
