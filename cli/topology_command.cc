// `tessera topology`: the rank layout that `train` would use, without starting anything: the
// rank table and the groups of each parallel dimension.
#include <iostream>

#include "cli/commands.h"
#include "cli/config_args.h"
#include "config/config.h"
#include "core/exit_codes.h"
#include "parallel/comm/launch.h"
#include "parallel/topology.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "topology";

// A config file is checked whole; bare overrides only need the parallel keys.
absl::StatusOr<Config> LayoutConfig(const Args& args) {
  if (!ConfigPath(args).empty()) return LoadConfig(ConfigPath(args), args.GetAll("set"));
  Config config;
  for (const std::string& o : args.GetAll("set")) {
    if (absl::Status s = ApplyOverride(config, o); !s.ok()) return s;
  }
  if (absl::Status s = ValidateParallelConfig(config); !s.ok()) return s;
  return config;
}

int PrintTopology(const Args& args) {
  auto world = args.GetInt("world", 0, {.min = 1});
  if (!world.ok()) return ReportError(kName, world.status(), kExitUsage);
  auto config = LayoutConfig(args);
  if (!config.ok()) return ReportError(kName, config.status(), kExitUsage);
  if (*world == 0) {
    auto launch = parallel::LaunchInfoFromEnvironment();
    if (!launch.ok()) return ReportError(kName, launch.status(), kExitUsage);
    *world = launch->world_size;
  }
  const ParallelConfig& p = config->parallel;
  auto topology = parallel::Topology::Create(*world, {p.tp, p.pp, p.dp, p.cp}, p.order);
  if (!topology.ok()) return ReportError(kName, topology.status(), kExitUsage);
  std::cout << topology->Table() << topology->GroupsReport();
  return kExitOk;
}

}  // namespace

Command TopologyCommand() {
  return {.name = kName,
          .usage = "topology [CONFIG.yaml] [--world N] [--set parallel.tp=...]...",
          .summary = "print the rank table and groups of a layout\n(N: the launcher's world size by default)",
          .args = ConfigArgSpec({Flag::Value("world", "a positive integer")}),
          .run = PrintTopology};
}

}  // namespace tessera::cli
