// Pattern expansion for glob.h: glob(3) for ordinary patterns, a directory walk with fnmatch(3)
// for `**`. Results are sorted byte-wise and de-duplicated.
#include "core/glob.h"

#include <fnmatch.h>
#include <glob.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

void AddRegularFilesBelow(const std::filesystem::path& dir, std::vector<std::string>* out) {
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) out->push_back(it->path().string());
  }
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandFilePatterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const std::string& pattern : patterns) {
    const size_t before = files.size();
    const size_t star2 = pattern.find("**");
    if (star2 != std::string::npos) {
      // Walk from the directory part before `**`; match the whole path with fnmatch, where `*`
      // also crosses '/' (no FNM_PATHNAME), which is exactly what `**` means.
      const std::string root = star2 == 0 ? std::string(".") : pattern.substr(0, star2);
      std::vector<std::string> below;
      AddRegularFilesBelow(root, &below);
      for (const std::string& path : below) {
        if (::fnmatch(pattern.c_str(), path.c_str(), 0) == 0) files.push_back(path);
      }
    } else {
      std::error_code ec;
      if (std::filesystem::is_directory(pattern, ec)) {
        AddRegularFilesBelow(pattern, &files);
      } else {
        glob_t result;
        int rc = ::glob(pattern.c_str(), GLOB_NOSORT, nullptr, &result);
        if (rc == 0) {
          for (size_t i = 0; i < result.gl_pathc; ++i) {
            if (std::filesystem::is_regular_file(result.gl_pathv[i], ec)) {
              files.push_back(result.gl_pathv[i]);
            }
          }
        }
        globfree(&result);
      }
    }
    if (files.size() == before) {
      return absl::NotFoundError(absl::StrCat("no file matches '", pattern, "'"));
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace tessera
