// The `tessera` command: finds the command its arguments name in the command table
// (cli/command_table.cc) and runs it. All real work lives in the libraries; exit codes are those
// of core/exit_codes.h (0 success, 1 runtime failure, 2 bad command line or config, ...).
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/exit_codes.h"

int main(int argc, char** argv) {
  namespace cli = tessera::cli;
  const std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty()) {
    cli::PrintCommandList(stderr);
    return tessera::kExitUsage;
  }
  size_t name_words = 0;
  const cli::Command* command = cli::FindCommand(words, &name_words);
  if (command == nullptr) return cli::ReportUnknownCommand(words);
  return cli::RunCommand(*command, std::vector<std::string>(words.begin() + name_words, words.end()));
}
