// The command table: every `tessera` command once, in the order `tessera help` lists them, and
// the help command itself.
#include <memory>

#include "cli/command.h"
#include "cli/commands.h"
#include "core/exit_codes.h"

namespace tessera::cli {
namespace {

// `tessera help [COMMAND...]`: the list of commands, or the usage of the one named.
int Help(const Args& args) {
  const std::vector<std::string>& words = args.positional();
  if (words.empty()) {
    PrintCommandList(stdout);
    return kExitOk;
  }
  size_t name_words = 0;
  const Command* command = FindCommand(words, &name_words);
  if (command == nullptr) return ReportUnknownCommand(words);
  PrintCommandHelp(*command, stdout);
  return kExitOk;
}

Command HelpCommand() {
  return {.name = "help",
          .usage = "help [COMMAND]",
          .summary = "this text, or the usage of one command",
          .args = {.flags = {}, .max_positionals = 2},
          .run = Help};
}

}  // namespace

const std::vector<Command>& CommandTable() {
  static const auto* const table = new std::vector<Command>{
      TrainCommand(),           ConfigCommand(),         ValidateCommand(),      PlanCommand(),
      SweepCommand(),           TopologyCommand(),       TokenizeCommand(),      DetokenizeCommand(),
      TokenizerTrainCommand(),  TokenizerBenchCommand(), TokenizerInfoCommand(), PreprocessCommand(),
      DatasetInfoCommand(),     DatasetDumpCommand(),    PlotCommand(),          ScheduleCommand(),
      ExportHfCommand(),        ImportHfCommand(),       LogitsCommand(),        GenerateCommand(),
      CheckpointToolsCommand(), HelpCommand(),
  };
  return *table;
}

}  // namespace tessera::cli
