// Step directory scanning, FindLatestValid and retention (checkpoint_dir.h).
#include "checkpoint/checkpoint_dir.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/durable_io.h"
#include "core/file_util.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace fs = std::filesystem;

namespace {

bool ParseStepDirName(const std::string& name, int64_t* step) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return false;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  return absl::SimpleAtoi(digits, step);
}

absl::Status Check(const std::string& step_dir, Verify verify) {
  TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(step_dir));
  if (verify == Verify::kChecksums) TS_RETURN_IF_ERROR(reader->VerifyChecksums());
  return absl::OkStatus();
}

// Whether the step directory holds a manifest that parses (no data is read).
bool IsCommitted(const std::string& step_dir) {
  auto bytes = ReadFileToString(absl::StrCat(step_dir, "/", kManifestFileName));
  return bytes.ok() && ParseManifest(*bytes, step_dir).ok();
}

}  // namespace

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

std::string StepDirPath(const std::string& dir, int64_t step) {
  return absl::StrCat(dir, "/", StepDirName(step));
}

absl::StatusOr<std::vector<StepDir>> ListStepDirs(const std::string& dir) {
  std::vector<StepDir> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  fs::directory_iterator it(dir, ec);
  if (ec)
    return absl::NotFoundError(absl::StrCat("cannot list checkpoint directory '", dir, "': ", ec.message()));
  for (const fs::directory_entry& e : it) {
    int64_t step;
    if (e.is_directory(ec) && ParseStepDirName(e.path().filename().string(), &step)) {
      out.push_back({step, e.path().string()});
    }
  }
  std::sort(out.begin(), out.end(), [](const StepDir& a, const StepDir& b) { return a.step > b.step; });
  return out;
}

absl::StatusOr<FoundCheckpoint> FindLatestValid(const std::string& dir, Verify verify) {
  TS_ASSIGN_OR_RETURN(std::vector<StepDir> dirs, ListStepDirs(dir));
  FoundCheckpoint found;
  for (const StepDir& d : dirs) {
    absl::Status status = Check(d.path, verify);
    if (status.ok()) {
      found.path = d.path;
      found.step = d.step;
      return found;
    }
    TS_LOG(WARNING) << "skipping checkpoint " << d.path << ": " << status.message();
    found.skipped.push_back({d.path, status});
  }
  std::string message = absl::StrCat("no usable checkpoint in '", dir, "'");
  if (dirs.empty()) absl::StrAppend(&message, ": it has no step-N directories");
  for (const SkippedCheckpoint& s : found.skipped)
    absl::StrAppend(&message, "\n  skipped ", s.path, ": ", s.reason.message());
  return absl::NotFoundError(message);
}

absl::StatusOr<FoundCheckpoint> ResolveCheckpoint(const std::string& path, Verify verify) {
  int64_t step = 0;
  const std::string name = fs::path(path).lexically_normal().filename().string();
  if (PathExists(absl::StrCat(path, "/", kManifestFileName)) || ParseStepDirName(name, &step)) {
    TS_RETURN_IF_ERROR(Check(path, verify));
    TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(path));
    return FoundCheckpoint{path, reader->manifest().step, {}};
  }
  if (!PathExists(path))
    return absl::NotFoundError(absl::StrCat("checkpoint path '", path, "' does not exist"));
  return FindLatestValid(path, verify);
}

absl::Status RemoveStepDir(const std::string& path) {
  const std::string manifest = absl::StrCat(path, "/", kManifestFileName);
  if (::unlink(manifest.c_str()) != 0 && errno != ENOENT) return ErrnoError(errno, "removing", manifest);
  // The manifest's removal must be durable before anything it refers to disappears.
  TS_RETURN_IF_ERROR(FsyncDirectory(path));
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return absl::DataLossError(absl::StrCat("removing '", path, "': ", ec.message()));
  return absl::OkStatus();
}

absl::Status RemoveUnreferencedFiles(const std::string& step_dir, const Manifest& manifest) {
  std::set<std::string> keep = {kManifestFileName};
  for (const ShardFileEntry& f : manifest.files) keep.insert(f.name);
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(step_dir, ec)) {
    if (keep.count(e.path().filename().string())) continue;
    fs::remove_all(e.path(), ec);
    if (ec) return absl::DataLossError(absl::StrCat("removing '", e.path().string(), "': ", ec.message()));
  }
  if (ec) return absl::DataLossError(absl::StrCat("listing '", step_dir, "': ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ApplyRetention(const std::string& dir, int keep,
                                                        int64_t committed_step) {
  TS_ASSIGN_OR_RETURN(std::vector<StepDir> dirs, ListStepDirs(dir));
  std::vector<std::string> removed;
  int committed_seen = 0;
  for (const StepDir& d : dirs) {  // newest first
    const bool committed = d.step == committed_step || IsCommitted(d.path);
    bool remove = false;
    if (committed) {
      ++committed_seen;
      remove = keep > 0 && committed_seen > keep && d.step != committed_step;
    } else {
      remove = d.step < committed_step;
    }
    if (!remove) continue;
    TS_RETURN_IF_ERROR(RemoveStepDir(d.path));
    removed.push_back(d.path);
  }
  return removed;
}

}  // namespace tessera::checkpoint
