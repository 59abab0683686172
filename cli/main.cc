// The `tessera` command: subcommands dispatch to small functions; all real work lives in the
// libraries. Exit codes: 0 success, 1 runtime failure, 2 bad command line or config.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/checkpoint_command.h"
#include "cli/data_commands.h"
#include "cli/logits_command.h"
#include "cli/plot_command.h"
#include "cli/schedule_command.h"
#include "cli/sweep_command.h"
#include "cli/validate_command.h"
#include "config/config.h"
#include "core/exit_codes.h"
#include "core/logging.h"
#include "interop/hf_export.h"
#include "interop/hf_import.h"
#include "parallel/comm/launch.h"
#include "parallel/process_grid.h"
#include "parallel/topology.h"
#include "trainer/grid_options.h"
#include "trainer/trainer.h"

namespace tessera {
namespace {

const char kUsage[] =
    "usage: tessera <command> [arguments]\n"
    "\n"
    "commands:\n"
    "  train [CONFIG.yaml] [--set key=value]...   train a model (defaults when no config)\n"
    "  config [CONFIG.yaml] [--set key=value]...  print the effective config\n"
    "  config --markdown                           print the reference of every config "
    "key\n" TESSERA_VALIDATE_COMMAND_USAGE TESSERA_SWEEP_COMMAND_USAGE
    "  topology [CONFIG.yaml] [--world N] [--set parallel.tp=...]...\n"
    "                                              print the rank table and groups of a layout\n"
    "                                              (N: the launcher's world size by "
    "default)\n" TESSERA_DATA_COMMANDS_USAGE TESSERA_PLOT_COMMAND_USAGE TESSERA_SCHEDULE_COMMAND_USAGE
    "  export-hf CHECKPOINT --out DIR [--dtype bf16|fp32|fp16] [--max-shard-size 5GB] [--tokenizer FILE]\n"
    "                                              write a Hugging Face Llama model (config.json,\n"
    "                                              safetensors) from a checkpoint (docs/checkpoints.md)\n"
    "  import-hf HF_DIR --out CHECKPOINT_DIR [--tokenizer FILE]\n"
    "                                              a Hugging Face Llama model as a step-0 checkpoint\n"
    "  logits CHECKPOINT --tokens 1,2,3 [--tokens ...]\n"
    "                                              print a checkpoint's fp32 logits as JSON (debugging)\n"
    "  help                                        this text\n";

struct ConfigArgs {
  std::string path;
  std::vector<std::string> overrides;
  bool markdown = false;
};

absl::StatusOr<ConfigArgs> ParseConfigArgs(const std::vector<std::string>& args) {
  ConfigArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--set") {
      if (i + 1 == args.size()) return absl::InvalidArgumentError("--set needs KEY=VALUE");
      out.overrides.push_back(args[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      out.overrides.push_back(a.substr(6));
    } else if (a == "--markdown") {
      out.markdown = true;
    } else if (a.rfind("-", 0) == 0) {
      return absl::InvalidArgumentError("unknown option '" + a + "'");
    } else if (out.path.empty()) {
      out.path = a;
    } else {
      return absl::InvalidArgumentError("unexpected argument '" + a +
                                        "' (one config file; overrides go after --set)");
    }
  }
  return out;
}

absl::StatusOr<Config> LoadFromArgs(const ConfigArgs& args) {
  return args.path.empty() ? ConfigFromOverrides(args.overrides) : LoadConfig(args.path, args.overrides);
}

int Fail(const absl::Status& status, int code) {
  std::fprintf(stderr, "tessera: error: %s\n", std::string(status.message()).c_str());
  return code;
}

// `tessera train`: one process, or one rank of a job started by mpirun / srun / torchrun.
// Errors every rank sees alike (config, layout, data) end each rank with the same message and
// exit code; an error of one rank alone goes through ProcessGrid::Abort, which ends the others.
int TrainCommand(const std::vector<std::string>& argv) {
  auto args = ParseConfigArgs(argv);
  if (!args.ok()) return Fail(args.status(), kExitUsage);
  auto config = LoadFromArgs(*args);
  if (!config.ok()) return Fail(config.status(), kExitUsage);
  auto launch = parallel::LaunchInfoFromEnvironment();
  if (!launch.ok()) return Fail(launch.status(), kExitUsage);
  const std::string device = ResolvedDeviceKind(config->train.device);
  parallel::GridOptions grid_options = GridOptionsFromConfig(*config, device);
  // SIGTERM / SIGUSR1 (Slurm's --signal, a scheduler's preemption): the trainer saves a
  // checkpoint at the next step boundary and exits with kExitPreempted; a second signal, or a
  // collective still stuck 10 s after it, ends the process at once.
  grid_options.exit_on_signal = false;
  auto grid = parallel::ProcessGrid::Create(*launch, grid_options);
  if (!grid.ok()) {
    return Fail(grid.status(),
                grid.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitRuntimeError);
  }
  if (absl::Status s = parallel::ConfigureRankLogging(**grid, config->train.run_dir); !s.ok()) {
    return Fail(s, kExitRuntimeError);
  }
  if ((*grid)->rank() == 0) TS_LOG(INFO) << (*grid)->Summary();
  auto trainer = Trainer::Create(*config, **grid);
  if (absl::Status s = AllRanksOk(**grid, trainer.status()); !s.ok()) {
    return Fail(s, s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kNotFound
                       ? kExitUsage
                       : kExitRuntimeError);
  }
  absl::Status status = (*trainer)->Run();
  if (!status.ok()) {
    const int code = ExitCodeOf(status, kExitRuntimeError);
    // A failed collective or a bad batch may be this rank's alone: make sure no peer waits.
    // Divergence is decided alike on every rank (from all-reduced figures): each exits itself.
    if ((*grid)->world_size() > 1 && code != kExitDiverged && code != kExitPreempted) (*grid)->Abort(status);
    return Fail(status, code);
  }
  TS_LOG(INFO) << "done: " << config->train.steps << " steps; metrics in " << config->train.run_dir
               << "/metrics.jsonl";
  return 0;
}

int ConfigCommand(const std::vector<std::string>& argv) {
  auto args = ParseConfigArgs(argv);
  if (!args.ok()) return Fail(args.status(), kExitUsage);
  if (args->markdown) {
    std::cout << ConfigSchemaMarkdown();
    return 0;
  }
  auto config = LoadFromArgs(*args);
  if (!config.ok()) return Fail(config.status(), kExitUsage);
  std::cout << ConfigToYaml(*config);
  return 0;
}

// `tessera topology`: the rank layout that `train` would use, without starting anything.
int TopologyCommand(const std::vector<std::string>& argv) {
  std::vector<std::string> rest;
  int64_t world = 0;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string value;
    if (argv[i] == "--world" && i + 1 < argv.size()) {
      value = argv[++i];
    } else if (argv[i].rfind("--world=", 0) == 0) {
      value = argv[i].substr(8);
    } else {
      rest.push_back(argv[i]);
      continue;
    }
    char* end = nullptr;
    world = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || world < 1) {
      return Fail(absl::InvalidArgumentError("--world expects a positive integer, got '" + value + "'"),
                  kExitUsage);
    }
  }
  auto args = ParseConfigArgs(rest);
  if (!args.ok()) return Fail(args.status(), kExitUsage);
  // A config file is checked whole; bare overrides only need the parallel keys.
  absl::StatusOr<Config> config = Config();
  if (!args->path.empty()) {
    config = LoadConfig(args->path, args->overrides);
  } else {
    for (const std::string& o : args->overrides) {
      if (absl::Status s = ApplyOverride(*config, o); !s.ok()) config = s;
      if (!config.ok()) break;
    }
    if (config.ok()) {
      if (absl::Status s = ValidateParallelConfig(*config); !s.ok()) config = s;
    }
  }
  if (!config.ok()) return Fail(config.status(), kExitUsage);
  if (world == 0) {
    auto launch = parallel::LaunchInfoFromEnvironment();
    if (!launch.ok()) return Fail(launch.status(), kExitUsage);
    world = launch->world_size;
  }
  const ParallelConfig& p = config->parallel;
  auto topology = parallel::Topology::Create(world, {p.tp, p.pp, p.dp}, p.order);
  if (!topology.ok()) return Fail(topology.status(), kExitUsage);
  std::cout << topology->Table() << topology->GroupsReport();
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  const std::string command = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (command == "train") return TrainCommand(rest);
  if (command == "config") return ConfigCommand(rest);
  if (command == "topology") return TopologyCommand(rest);
  if (command == "validate") return ValidateCommand(rest);
  if (command == "sweep") return sweep::SweepCommand(rest);
  if (command == "tokenize") return data::TokenizeCommand(rest);
  if (command == "detokenize") return data::DetokenizeCommand(rest);
  if (command == "tokenizer") return data::TokenizerCommand(rest);
  if (command == "preprocess") return data::PreprocessCommand(rest);
  if (command == "dataset") return data::DatasetCommand(rest);
  if (command == "plot") return PlotCommand(rest);
  if (command == "schedule") return parallel::pipeline::ScheduleCommand(rest);
  if (command == "export-hf") return checkpoint::ExportHfCommand(rest);
  if (command == "import-hf") return checkpoint::ImportHfCommand(rest);
  if (command == "logits") return checkpoint::LogitsCommand(rest);
  if (command == "checkpoint") return CheckpointCommand(rest);
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "tessera: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return kExitUsage;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
