// Expands shell-style file patterns (`dir/*.txt`, `data/**/part-*`) into a sorted list of
// regular files, so data selections are reproducible across machines and runs.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

// Each pattern must match at least one file; `**` matches any number of directories. A pattern
// without wildcards names a file (or a directory, meaning every regular file below it).
absl::StatusOr<std::vector<std::string>> ExpandFilePatterns(const std::vector<std::string>& patterns);

}  // namespace tessera
