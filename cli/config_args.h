// The arguments of the commands that read a config (train, config, validate, topology): one
// optional CONFIG.yaml and any number of --set KEY=VALUE overrides.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/args.h"
#include "config/config.h"

namespace tessera::cli {

// The flags (--set, and `more`) and the one positional of such a command.
ArgSpec ConfigArgSpec(std::vector<Flag> more = {});

// The config file given, or "" (defaults and overrides only).
std::string ConfigPath(const Args& args);

// The config file with the overrides applied, or the defaults with them; checked whole.
absl::StatusOr<Config> LoadConfigFromArgs(const Args& args);

}  // namespace tessera::cli
