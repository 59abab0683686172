// `tessera config`: prints the effective config (a file with its overrides, or the defaults with
// them) as YAML, or with --markdown the reference of every config key.
#include <iostream>

#include "cli/commands.h"
#include "cli/config_args.h"
#include "config/config.h"
#include "core/exit_codes.h"

namespace tessera::cli {
namespace {

constexpr char kName[] = "config";

int PrintConfig(const Args& args) {
  if (args.Has("markdown")) {
    std::cout << ConfigSchemaMarkdown();
    return kExitOk;
  }
  auto config = LoadConfigFromArgs(args);
  if (!config.ok()) return ReportError(kName, config.status(), kExitUsage);
  std::cout << ConfigToYaml(*config);
  return kExitOk;
}

}  // namespace

Command ConfigCommand() {
  return {.name = kName,
          .usage = "config [CONFIG.yaml] [--set key=value]... [--markdown]",
          .summary = "print the effective config\n(--markdown: the reference of every config key)",
          .args = ConfigArgSpec({Flag::Bool("markdown")}),
          .run = PrintConfig};
}

}  // namespace tessera::cli
