// The command table of `tessera`: every command, with its usage, the arguments it accepts and
// the function that runs it, registered once in command_table.cc. `tessera help` and the usage
// printed for a bad command line are made from it, and RunCommand is the one place that parses a
// command's arguments, answers --help and turns an exception into an error.
//
// Errors go through ReportError, so every command prints them alike:
//   tessera <command>: error: <message>
// and exits with the code the caller chose (core/exit_codes.h: 2 for a bad command line, config
// or input, 1 for a runtime failure, or the code a status carries).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/args.h"

namespace tessera::cli {

struct Command {
  // One or two words: "train", "tokenizer train".
  std::string name;
  // The command line after "tessera ", on one line: "train [CONFIG.yaml] [--set key=value]...".
  std::string usage;
  // What it does, a few words a line, for the list of commands.
  std::string summary;
  // More for `tessera help NAME` and `tessera NAME --help` (may be empty).
  std::string details = {};
  ArgSpec args = {};
  std::function<int(const Args&)> run = {};
  // Reports a command line that does not parse (default: ReportUsageError).
  std::function<int(const Command&, const absl::Status&)> on_usage_error = {};
};

// Every command, in the order `tessera help` lists them.
const std::vector<Command>& CommandTable();

// The command that `words` (the arguments after "tessera") start with, and how many words its
// name takes; nullptr when none matches.
const Command* FindCommand(const std::vector<std::string>& words, size_t* name_words);

// Parses `argv` (the arguments after the command's name) by the command's ArgSpec and runs it;
// an exception that escapes the command is reported as an error with exit code 1.
int RunCommand(const Command& command, const std::vector<std::string>& argv);

// "tessera NAME: error: MESSAGE" on stderr (after flushing stdout, so that the error follows what
// was printed before it when both go to one file); returns `exit_code`.
int ReportError(const std::string& command, const absl::Status& status, int exit_code);
// ReportError with exit code 2, followed by the command's usage line (its details are for --help).
int ReportUsageError(const Command& command, const absl::Status& status);
// The command of that name's usage error (for errors found after parsing: a missing argument).
int ReportUsageError(const std::string& command, const absl::Status& status);

// 2 for a status that says the input is wrong (InvalidArgument: a bad config or file; NotFound:
// a missing one), 1 otherwise.
int InputOrRuntimeExitCode(const absl::Status& status);

// "usage: tessera <command> [arguments]" and the list of commands.
void PrintCommandList(std::FILE* out);
// One command's usage, summary and details.
void PrintCommandHelp(const Command& command, std::FILE* out);
// For `words` that FindCommand found no command in: "unknown command 'X'" (with the closest
// name, if one is close) and the list of commands; or, for the first word of two-word commands
// ("tokenizer") without a known second word, the usage of those commands. Returns exit code 2.
int ReportUnknownCommand(const std::vector<std::string>& words);

}  // namespace tessera::cli
