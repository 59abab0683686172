// The argument parser every `tessera` command uses. A command declares its flags (boolean, or
// taking a value) and how many positional arguments it takes; Parse checks the command line
// against that and typed getters check values. Every error names the flag and what was expected,
// so the messages read alike across commands:
//   --NAME=VALUE and --NAME VALUE both give a value; a flag given again adds a value (--set);
//   an argument starting with '-' is a flag (unknown ones are errors); "--" ends the flags;
//   --help and -h ask for the command's usage (Args::help()).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::cli {

// One flag, named without its leading "--".
struct Flag {
  std::string name;
  // What its value is, as "--NAME needs <value>" says ("a value", "KEY=VALUE"); empty for a
  // boolean flag, which takes none.
  std::string value;

  static Flag Bool(std::string name) { return {std::move(name), ""}; }
  static Flag Value(std::string name, std::string what = "a value") {
    return {std::move(name), std::move(what)};
  }
  bool takes_value() const { return !value.empty(); }
};

// What a command accepts.
struct ArgSpec {
  std::vector<Flag> flags = {};
  // At most this many positional arguments (-1: any number).
  int max_positionals = -1;
  // Follows "unexpected argument 'X'" when there are more positionals than that, to say why.
  std::string extra_positional_note = {};
};

// Bounds of an integer value. `what` names the expected value in errors ("an integer number of
// pixels in [100, 20000]"); empty, it is made from the bounds ("a positive integer").
struct IntRange {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
  std::string what = {};
};

class Args {
 public:
  // Errors (InvalidArgument): an unknown flag, a missing value, a value given to a boolean
  // flag, too many positionals.
  static absl::StatusOr<Args> Parse(const ArgSpec& spec, const std::vector<std::string>& argv);

  // --help or -h was given.
  bool help() const { return help_; }
  bool Has(const std::string& name) const { return values_.contains(name); }
  // The last value given, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // Every value given, in order (empty when none).
  const std::vector<std::string>& GetAll(const std::string& name) const;
  // The last value as an integer within `range`; `fallback` (unchecked) when the flag is absent.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback, const IntRange& range = {}) const;
  // The last value as a number >= `min`; `fallback` (unchecked) when the flag is absent.
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback,
                                   double min = -std::numeric_limits<double>::infinity()) const;
  // The last value, which must be one of `choices`; `fallback` when the flag is absent.
  absl::StatusOr<std::string> GetChoice(const std::string& name, const std::string& fallback,
                                        const std::vector<std::string>& choices) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  bool help_ = false;
  std::map<std::string, std::vector<std::string>> values_;  // a boolean flag: one "" per use
  std::vector<std::string> positional_;
};

}  // namespace tessera::cli
