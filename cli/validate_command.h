// `tessera validate`: checks a config the way `tessera train` would at start-up, without
// starting anything or opening data, and prints what an operator needs before queueing a job:
// the parameter count (total, and per rank under tensor and pipeline parallelism), a per-rank
// memory estimate, the rank layout, the pipeline schedule's bubble, and whether the data
// corpora exist on this machine (a warning, not an error: clusters have their own paths).
// Exit codes: 0 valid (also with warnings), 2 invalid, with the message.
#pragma once

#include <string>
#include <vector>

namespace tessera {

int ValidateCommand(const std::vector<std::string>& args);

}  // namespace tessera

// The usage lines for trainer/main.cc's usage literal.
#define TESSERA_VALIDATE_COMMAND_USAGE                                                            \
  "  validate [CONFIG.yaml] [--world N] [--set key=value]...\n"                                   \
  "                                              check a config (and with --world, its layout)\n" \
  "                                              without running: parameters, memory per rank,\n" \
  "                                              pipeline bubble, data presence\n"
