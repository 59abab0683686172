// The config file and --set overrides of a command line (config_args.h).
#include "cli/config_args.h"

namespace tessera::cli {

ArgSpec ConfigArgSpec(std::vector<Flag> more) {
  ArgSpec spec;
  spec.flags = {Flag::Value("set", "KEY=VALUE")};
  spec.flags.insert(spec.flags.end(), more.begin(), more.end());
  spec.max_positionals = 1;
  spec.extra_positional_note = "(one config file; overrides go after --set)";
  return spec;
}

std::string ConfigPath(const Args& args) { return args.positional().empty() ? "" : args.positional()[0]; }

absl::StatusOr<Config> LoadConfigFromArgs(const Args& args) {
  const std::string path = ConfigPath(args);
  return path.empty() ? ConfigFromOverrides(args.GetAll("set")) : LoadConfig(path, args.GetAll("set"));
}

}  // namespace tessera::cli
