// Building and printing the command of a local sweep run (run_command.h).
#include "tools/sweep/run_command.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera::sweep {

LaunchSettings LaunchSettingsFromEnvironment() {
  LaunchSettings s;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  s.tessera = ec ? "tessera" : self.string();
  if (const char* m = std::getenv("TESSERA_MPIRUN"); m != nullptr && *m != '\0') s.mpirun = m;
  s.cores = std::max(1u, std::thread::hardware_concurrency());
  s.root = ::geteuid() == 0;
  return s;
}

RunCommand LocalRunCommand(const SweepSpec& spec, const SweepRun& run, const LaunchSettings& settings) {
  RunCommand c;
  if (spec.ranks > 1) {
    auto set_env = [&](const char* name, const char* value) {
      if (std::getenv(name) == nullptr) c.env.push_back(absl::StrCat(name, "=", value));
    };
    if (settings.root) {
      set_env("OMPI_ALLOW_RUN_AS_ROOT", "1");
      set_env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    if (spec.ranks > settings.cores) set_env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    set_env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c.argv = {settings.mpirun, "-np", std::to_string(spec.ranks)};
    c.argv.insert(c.argv.end(), spec.mpirun_args.begin(), spec.mpirun_args.end());
  }
  c.argv.push_back(settings.tessera);
  c.argv.push_back("train");
  c.argv.push_back(spec.base);
  for (const std::string& a : RunAssignments(spec, run)) {
    c.argv.push_back("--set");
    c.argv.push_back(a);
  }
  return c;
}

std::string ShellQuote(const std::string& word) {
  if (word.empty()) return "''";
  bool safe = true;
  for (char c : word) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
                    std::string_view("@%+=:,./-_").find(c) != std::string_view::npos;
    if (!ok) safe = false;
  }
  if (safe) return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string FormatCommand(const RunCommand& command) {
  std::vector<std::string> words;
  if (!command.env.empty()) words.push_back("env");
  for (const std::string& e : command.env) words.push_back(ShellQuote(e));
  for (const std::string& a : command.argv) words.push_back(ShellQuote(a));
  return absl::StrJoin(words, " ");
}

}  // namespace tessera::sweep
