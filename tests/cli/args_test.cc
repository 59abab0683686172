// Tests of cli/args: flags with values (both spellings, repeated), boolean flags, positionals and
// their limit, "--", --help, and the errors of parsing and of the typed getters, which name the
// flag and what was expected.
#include "cli/args.h"

#include <string>
#include <vector>

#include "tests/catch_compat.h"

namespace {

using tessera::cli::Args;
using tessera::cli::ArgSpec;
using tessera::cli::Flag;

ArgSpec Spec() {
  return {.flags = {Flag::Value("set", "KEY=VALUE"), Flag::Value("world"), Flag::Value("rate"),
                    Flag::Value("mode"), Flag::Bool("dry-run")},
          .max_positionals = 1,
          .extra_positional_note = "(one config file)"};
}

std::string ErrorOf(const std::vector<std::string>& argv, const ArgSpec& spec = Spec()) {
  absl::StatusOr<Args> args = Args::Parse(spec, argv);
  return args.ok() ? "" : std::string(args.status().message());
}

}  // namespace

CATCH_TEST_CASE("args: values in both spellings, repeated flags, booleans, a positional") {
  auto args = Args::Parse(Spec(), {"run.yaml", "--set", "a=1", "--set=b=2", "--world=4", "--dry-run"});
  CATCH_REQUIRE(args.ok());
  CATCH_CHECK(args->positional() == std::vector<std::string>{"run.yaml"});
  CATCH_CHECK(args->GetAll("set") == std::vector<std::string>{"a=1", "b=2"});
  CATCH_CHECK(args->Get("set") == "b=2");
  CATCH_CHECK(args->Get("world") == "4");
  CATCH_CHECK(args->Has("dry-run"));
  CATCH_CHECK(!args->Has("mode"));
  CATCH_CHECK(args->Get("mode", "fast") == "fast");
  CATCH_CHECK(args->GetAll("mode").empty());
  CATCH_CHECK(!args->help());
}

CATCH_TEST_CASE("args: a value may start with a dash; -- ends the flags; --help and -h") {
  auto args = Args::Parse(Spec(), {"--set", "-x", "--", "--world"});
  CATCH_REQUIRE(args.ok());
  CATCH_CHECK(args->Get("set") == "-x");
  CATCH_CHECK(args->positional() == std::vector<std::string>{"--world"});
  CATCH_CHECK(Args::Parse(Spec(), {"--help"})->help());
  CATCH_CHECK(Args::Parse(Spec(), {"x", "-h"})->help());
  // A lone "-" is an argument (stdin, by convention), not a flag.
  CATCH_CHECK(Args::Parse(Spec(), {"-"})->positional() == std::vector<std::string>{"-"});
}

CATCH_TEST_CASE("args: parse errors name the flag or argument") {
  CATCH_CHECK(ErrorOf({"--sett", "a=b"}) == "unknown option '--sett'");
  CATCH_CHECK(ErrorOf({"--sett=a=b"}) == "unknown option '--sett'");
  CATCH_CHECK(ErrorOf({"-s"}) == "unknown option '-s'");
  CATCH_CHECK(ErrorOf({"--set"}) == "--set needs KEY=VALUE");
  CATCH_CHECK(ErrorOf({"--world"}) == "--world needs a value");
  CATCH_CHECK(ErrorOf({"--dry-run=yes"}) == "--dry-run takes no value");
  CATCH_CHECK(ErrorOf({"a.yaml", "b.yaml"}) == "unexpected argument 'b.yaml' (one config file)");
  CATCH_CHECK(ErrorOf({"x"}, {.max_positionals = 0}) == "unexpected argument 'x'");
  CATCH_CHECK(ErrorOf({"a", "b", "c"}, {}).empty());  // any number by default
}

CATCH_TEST_CASE("args: integer getter: fallback, bounds, and errors that say what was expected") {
  auto args = Args::Parse(Spec(), {"--world", "8"});
  CATCH_REQUIRE(args.ok());
  CATCH_CHECK(*args->GetInt("world", 0, {.min = 1}) == 8);
  CATCH_CHECK(*args->GetInt("rate", -1, {.min = 1}) == -1);  // absent: the fallback, unchecked
  CATCH_CHECK(args->GetInt("world", 0, {.min = 1, .max = 4}).status().message() ==
              "--world expects an integer in [1, 4], got '8'");
  auto bad = Args::Parse(Spec(), {"--world", "zero"});
  CATCH_CHECK(bad->GetInt("world", 0).status().message() == "--world expects an integer, got 'zero'");
  CATCH_CHECK(bad->GetInt("world", 0, {.min = 1}).status().message() ==
              "--world expects a positive integer, got 'zero'");
  CATCH_CHECK(bad->GetInt("world", 0, {.min = 0}).status().message() ==
              "--world expects a non-negative integer, got 'zero'");
  CATCH_CHECK(
      bad->GetInt("world", 0, {.min = 100, .max = 200, .what = "a number of pixels"}).status().message() ==
      "--world expects a number of pixels, got 'zero'");
}

CATCH_TEST_CASE("args: number and choice getters") {
  auto args = Args::Parse(Spec(), {"--rate", "0.5", "--mode", "slow"});
  CATCH_REQUIRE(args.ok());
  CATCH_CHECK(*args->GetDouble("rate", 1.0) == 0.5);
  CATCH_CHECK(*args->GetDouble("world", 2.5) == 2.5);
  CATCH_CHECK(args->GetDouble("rate", 1.0, 1.0).status().message() ==
              "--rate expects a number >= 1, got '0.5'");
  CATCH_CHECK(args->GetDouble("mode", 1.0).status().message() == "--mode expects a number, got 'slow'");
  CATCH_CHECK(*args->GetChoice("mode", "fast", {"fast", "slow"}) == "slow");
  CATCH_CHECK(*args->GetChoice("world", "fast", {"fast", "slow"}) == "fast");
  CATCH_CHECK(args->GetChoice("mode", "fast", {"fast", "safe"}).status().message() ==
              "--mode expects one of fast, safe, got 'slow'");
}
