// Tests of trainer/sweep/run_command: one process or mpirun with the sweep's ranks and extra
// arguments, the base config and the run's assignments in order, and shell quoting.
#include "tools/sweep/run_command.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::sweep::FormatCommand;
using tessera::sweep::LaunchSettings;
using tessera::sweep::LocalRunCommand;
using tessera::sweep::RunCommand;
using tessera::sweep::ShellQuote;
using tessera::sweep::SweepRun;
using tessera::sweep::SweepSpec;

CATCH_TEST_CASE("run command: one process then mpirun with the sweep's arguments") {
  SweepSpec spec;
  spec.base = "configs/tiny.yaml";
  spec.common = {{"train.steps", "10", 1}};
  SweepRun run{3, "s-003", "runs/s/s-003", "list", {{"train.lr", "0.1", 2}}};
  LaunchSettings settings{"/opt/tessera", "mpirun", 2, false};
  const RunCommand one = LocalRunCommand(spec, run, settings);
  CATCH_CHECK(one.env.empty());
  CATCH_CHECK(one.argv == std::vector<std::string>{"/opt/tessera", "train", "configs/tiny.yaml", "--set",
                                                   "train.steps=10", "--set", "train.lr=0.1", "--set",
                                                   "train.run_dir=runs/s/s-003"});
  spec.ranks = 4;
  spec.mpirun_args = {"--bind-to", "none"};
  const RunCommand many = LocalRunCommand(spec, run, settings);
  CATCH_REQUIRE(many.argv.size() == one.argv.size() + 5);
  CATCH_CHECK(std::vector<std::string>(many.argv.begin(), many.argv.begin() + 6) ==
              std::vector<std::string>{"mpirun", "-np", "4", "--bind-to", "none", "/opt/tessera"});
}

CATCH_TEST_CASE("run command: shell quoting") {
  CATCH_CHECK(ShellQuote("train.lr=3e-4") == "train.lr=3e-4");
  CATCH_CHECK(ShellQuote("") == "''");
  CATCH_CHECK(ShellQuote("data.train=[{prefix: a, weight: 1}]") == "'data.train=[{prefix: a, weight: 1}]'");
  CATCH_CHECK(ShellQuote("it's") == "'it'\\''s'");
  CATCH_CHECK(FormatCommand({{"A=1"}, {"tessera", "train", "x y"}}) == "env A=1 tessera train 'x y'");
}
