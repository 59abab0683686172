// Tests of core/glob: sorted expansion, `**`, directories, and the error for an empty match.
#include "core/glob.h"

#include <filesystem>
#include <fstream>

#include "tests/catch_compat.h"

namespace fs = std::filesystem;

namespace {

fs::path MakeTree() {
  fs::path root = fs::temp_directory_path() / ("tessera_glob_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "a" / "deep");
  for (const char* name : {"b.txt", "a/one.txt", "a/two.md", "a/deep/three.txt"}) {
    std::ofstream(root / name) << name;
  }
  return root;
}

}  // namespace

CATCH_TEST_CASE("glob expands patterns to sorted regular files") {
  const fs::path root = MakeTree();
  auto files = tessera::ExpandFilePatterns({(root / "a/*.txt").string(), (root / "*.txt").string()});
  CATCH_REQUIRE(files.ok());
  CATCH_REQUIRE(*files == std::vector<std::string>{(root / "a/one.txt").string(), (root / "b.txt").string()});
}

CATCH_TEST_CASE("glob ** crosses directories and a directory means every file below it") {
  const fs::path root = MakeTree();
  auto deep = tessera::ExpandFilePatterns({(root / "**.txt").string()});
  CATCH_REQUIRE(deep.ok());
  CATCH_CHECK(deep->size() == 3);
  auto dir = tessera::ExpandFilePatterns({(root / "a").string()});
  CATCH_REQUIRE(dir.ok());
  CATCH_CHECK(*dir == std::vector<std::string>{(root / "a/deep/three.txt").string(),
                                               (root / "a/one.txt").string(), (root / "a/two.md").string()});
}

CATCH_TEST_CASE("glob names the pattern that matched nothing") {
  const fs::path root = MakeTree();
  const std::string missing = (root / "nothing-*.bin").string();
  auto files = tessera::ExpandFilePatterns({(root / "b.txt").string(), missing});
  CATCH_REQUIRE_FALSE(files.ok());
  CATCH_CHECK(std::string(files.status().message()).find(missing) != std::string::npos);
}
