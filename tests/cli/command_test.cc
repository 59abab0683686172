// Tests of cli/command with a table of its own: finding one- and two-word commands, --help,
// command lines that do not parse (exit 2), an exception escaping a command (exit 1, reported),
// and unknown commands and sub-commands (exit 2).
#include "cli/command.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/catch_compat.h"

namespace tessera::cli {

// The table of this test binary (the tessera binary links cli/command_table.cc instead).
const std::vector<Command>& CommandTable() {
  static const auto* const table = new std::vector<Command>{
      {.name = "count",
       .usage = "count [--by N] WORD...",
       .summary = "counts",
       .args = {.flags = {Flag::Value("by")}},
       .run = [](const Args& args) { return static_cast<int>(args.positional().size()); }},
      {.name = "throw",
       .usage = "throw",
       .summary = "throws",
       .run = [](const Args&) -> int { throw std::runtime_error("boom"); }},
      {.name = "group one", .usage = "group one", .summary = "first", .run = [](const Args&) { return 11; }},
      {.name = "group two", .usage = "group two", .summary = "second", .run = [](const Args&) { return 12; }},
  };
  return *table;
}

}  // namespace tessera::cli

namespace {

using tessera::cli::Command;
using tessera::cli::FindCommand;
using tessera::cli::ReportUnknownCommand;
using tessera::cli::RunCommand;

int Run(const std::vector<std::string>& words) {
  size_t name_words = 0;
  const Command* command = FindCommand(words, &name_words);
  if (command == nullptr) return ReportUnknownCommand(words);
  return RunCommand(*command, std::vector<std::string>(words.begin() + name_words, words.end()));
}

}  // namespace

CATCH_TEST_CASE("command: one- and two-word names find their command") {
  size_t name_words = 0;
  const Command* c = FindCommand({"group", "two", "x"}, &name_words);
  CATCH_REQUIRE(c != nullptr);
  CATCH_CHECK(c->name == "group two");
  CATCH_CHECK(name_words == 2);
  CATCH_CHECK(FindCommand({"count"}, &name_words)->name == "count");
  CATCH_CHECK(name_words == 1);
  CATCH_CHECK(FindCommand({"cuont"}, &name_words) == nullptr);
  CATCH_CHECK(Run({"group", "one"}) == 11);
  CATCH_CHECK(Run({"count", "a", "b", "--by", "2"}) == 2);
}

CATCH_TEST_CASE("command: --help exits 0; a command line that does not parse exits 2") {
  CATCH_CHECK(Run({"count", "--help"}) == 0);
  CATCH_CHECK(Run({"count", "--by"}) == 2);
  CATCH_CHECK(Run({"count", "--bye", "2"}) == 2);
}

CATCH_TEST_CASE("command: an exception that escapes a command is an error with exit code 1") {
  CATCH_CHECK(Run({"throw"}) == 1);
}

CATCH_TEST_CASE("command: unknown commands and sub-commands exit 2") {
  CATCH_CHECK(Run({"cuont"}) == 2);
  CATCH_CHECK(Run({"group"}) == 2);
  CATCH_CHECK(Run({"group", "three"}) == 2);
}

CATCH_TEST_CASE("command: exit codes for input and runtime errors") {
  CATCH_CHECK(tessera::cli::InputOrRuntimeExitCode(absl::InvalidArgumentError("x")) == 2);
  CATCH_CHECK(tessera::cli::InputOrRuntimeExitCode(absl::NotFoundError("x")) == 2);
  CATCH_CHECK(tessera::cli::InputOrRuntimeExitCode(absl::InternalError("x")) == 1);
  CATCH_CHECK(tessera::cli::ReportError("count", absl::InternalError("x"), 5) == 5);
}
