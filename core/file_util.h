// File helpers that report failures as absl::Status naming the path: whole-file reads, and
// atomic writes (temporary file, fsync, rename) so a crash never leaves a half-written file.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes `contents` to `path` via `path.tmp.<pid>` + fsync + rename.
absl::Status WriteFileAtomic(const std::string& path, std::string_view contents);
// Creates a directory and its parents (like mkdir -p).
absl::Status MakeDirs(const std::string& path);
bool PathExists(const std::string& path);

}  // namespace tessera
