// Looking commands up in the table, running them, and the texts made from the table: the list of
// commands, one command's help, and the errors for a bad command line.
#include "cli/command.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/exit_codes.h"
#include "core/strings.h"

namespace tessera::cli {
namespace {

// The column where a command's summary starts in the list of commands, and the width its usage
// is wrapped to.
constexpr size_t kSummaryColumn = 46;
constexpr size_t kUsageWidth = 100;

// " (did you mean 'train'?)" for the first word of the closest command name, or "".
std::string Suggestion(const std::string& word) {
  std::string best;
  size_t best_distance = 3;  // two edits at most: further off is a different word, not a typo
  for (const Command& c : CommandTable()) {
    const std::string first = c.name.substr(0, c.name.find(' '));
    const size_t d = EditDistance(word, first);
    if (d < best_distance) best_distance = d, best = first;
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean '", best, "'?)");
}

const Command* CommandNamed(const std::string& name) {
  for (const Command& c : CommandTable()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// The words of a usage, a bracketed group ("[--height 800]", "[--slurm [--submit]]") as one.
std::vector<std::string> UsageUnits(const std::string& usage) {
  std::vector<std::string> units;
  int depth = 0;
  for (absl::string_view word : absl::StrSplit(usage, ' ', absl::SkipEmpty())) {
    if (depth > 0) {
      absl::StrAppend(&units.back(), " ", word);
    } else {
      units.emplace_back(word);
    }
    for (char c : word) depth += c == '[' ? 1 : c == ']' ? -1 : 0;
  }
  return units;
}

// The usage broken into lines of at most kUsageWidth columns (after a two-space indent) between
// its units; the lines after the first are indented past the command's name.
std::vector<std::string> WrappedUsage(const Command& command) {
  std::vector<std::string> lines = {"  "};
  const std::string indent(2 + command.name.size() + 1, ' ');
  for (const std::string& unit : UsageUnits(command.usage)) {
    if (lines.back().size() > indent.size() && lines.back().size() + 1 + unit.size() > kUsageWidth) {
      lines.push_back(indent);
    } else if (lines.back().size() > 2) {
      lines.back() += ' ';
    }
    lines.back() += unit;
  }
  return lines;
}

void PrintListEntry(const Command& command, std::FILE* out) {
  std::vector<std::string> lines = WrappedUsage(command);
  const std::vector<std::string> summary = absl::StrSplit(command.summary, '\n');
  const std::string column(kSummaryColumn, ' ');
  for (size_t i = 0; i < summary.size(); ++i) {
    if (i == 0 && lines.back().size() + 2 <= kSummaryColumn) {
      lines.back().resize(kSummaryColumn, ' ');
      lines.back() += summary[0];
    } else {
      lines.push_back(column + summary[i]);
    }
  }
  for (const std::string& line : lines) std::fprintf(out, "%s\n", line.c_str());
}

void PrintUsageLine(const Command& command, std::FILE* out) {
  std::fprintf(out, "usage: tessera %s\n", command.usage.c_str());
}

}  // namespace

const Command* FindCommand(const std::vector<std::string>& words, size_t* name_words) {
  if (words.empty()) return nullptr;
  if (words.size() >= 2) {
    if (const Command* c = CommandNamed(absl::StrCat(words[0], " ", words[1]))) {
      *name_words = 2;
      return c;
    }
  }
  *name_words = 1;
  if (words[0] == "--help" || words[0] == "-h") return CommandNamed("help");
  return CommandNamed(words[0]);
}

int RunCommand(const Command& command, const std::vector<std::string>& argv) {
  try {
    absl::StatusOr<Args> args = Args::Parse(command.args, argv);
    if (!args.ok()) {
      return command.on_usage_error ? command.on_usage_error(command, args.status())
                                    : ReportUsageError(command, args.status());
    }
    if (args->help()) {
      PrintCommandHelp(command, stdout);
      return kExitOk;
    }
    return command.run(*args);
  } catch (const std::exception& e) {
    return ReportError(command.name, absl::InternalError(absl::StrCat("unexpected exception: ", e.what())),
                       kExitRuntimeError);
  } catch (...) {
    return ReportError(command.name, absl::InternalError("unexpected exception of an unknown type"),
                       kExitRuntimeError);
  }
}

int ReportError(const std::string& command, const absl::Status& status, int exit_code) {
  std::fflush(stdout);
  std::fprintf(stderr, "tessera %s: error: %s\n", command.c_str(), std::string(status.message()).c_str());
  return exit_code;
}

int ReportUsageError(const Command& command, const absl::Status& status) {
  ReportError(command.name, status, kExitUsage);
  PrintUsageLine(command, stderr);
  return kExitUsage;
}

int ReportUsageError(const std::string& command, const absl::Status& status) {
  const Command* c = CommandNamed(command);
  return c ? ReportUsageError(*c, status) : ReportError(command, status, kExitUsage);
}

int InputOrRuntimeExitCode(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument || status.code() == absl::StatusCode::kNotFound
             ? kExitUsage
             : kExitRuntimeError;
}

void PrintCommandList(std::FILE* out) {
  std::fprintf(out, "usage: tessera <command> [arguments]\n\ncommands:\n");
  for (const Command& c : CommandTable()) PrintListEntry(c, out);
  std::fprintf(out, "\n`tessera help COMMAND` or `tessera COMMAND --help`: the usage of one command\n");
}

void PrintCommandHelp(const Command& command, std::FILE* out) {
  std::fprintf(out, "usage: tessera %s\n", command.usage.c_str());
  for (absl::string_view line : absl::StrSplit(command.summary, '\n')) {
    std::fprintf(out, "  %s\n", std::string(line).c_str());
  }
  if (!command.details.empty()) std::fprintf(out, "%s\n", command.details.c_str());
}

namespace {

// The usage lines of the commands whose name starts with `group`, after an error that says which
// second words there are.
int ReportUnknownSubcommand(const std::string& group, const std::vector<std::string>& words) {
  std::vector<const Command*> members;
  std::vector<std::string> subs;
  for (const Command& c : CommandTable()) {
    if (c.name.rfind(group + " ", 0) == 0) {
      members.push_back(&c);
      subs.push_back(c.name.substr(group.size() + 1));
    }
  }
  const std::string expected = absl::StrCat("one of ", absl::StrJoin(subs, ", "));
  ReportError(group,
              absl::InvalidArgumentError(words.size() < 2 ? absl::StrCat("needs a sub-command: ", expected)
                                                          : absl::StrCat("unknown sub-command '", words[1],
                                                                         "' (expected ", expected, ")")),
              kExitUsage);
  std::fprintf(stderr, "usage:\n");
  for (const Command* c : members) PrintListEntry(*c, stderr);
  return kExitUsage;
}

}  // namespace

int ReportUnknownCommand(const std::vector<std::string>& words) {
  const std::string& word = words.at(0);
  for (const Command& c : CommandTable()) {
    if (c.name.rfind(word + " ", 0) == 0) return ReportUnknownSubcommand(word, words);
  }
  std::fprintf(stderr, "tessera: unknown command '%s'%s\n\n", word.c_str(), Suggestion(word).c_str());
  PrintCommandList(stderr);
  return kExitUsage;
}

}  // namespace tessera::cli
