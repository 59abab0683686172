// TruncateEventFiles (event_history.h): reads every record of every event file, decides over
// all of them at once which steps stay (the files of successive attempts form one history), and
// rewrites the files that lose records. The only other translation unit, besides the writer,
// that sees the generated Event class.
#include "trainer/tensorboard/event_history.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "trainer/tensorboard/event.pb.h"
#include "trainer/tensorboard/record_framing.h"

namespace tessera::tensorboard {
namespace {

constexpr std::string_view kPrefix = "events.out.tfevents.";

// One event file in memory: its bytes, and for each good record its payload and whether it
// stays.
struct EventFile {
  std::string path;
  std::string bytes;
  std::vector<std::string_view> payloads;
  std::vector<bool> keep;
  bool lost_tail = false;  // a torn or corrupt record ended the reading
};

// The creation time a writer put into the name (".../events.out.tfevents.1700000000.host"), or 0.
int64_t CreationSeconds(const std::string& name) {
  return std::strtoll(name.c_str() + kPrefix.size(), nullptr, 10);
}

// Reads `file->path` and its records; returns the steps of its step records (every event but
// file_version), in order, with their record indices. Records that do not parse are dropped.
absl::Status ReadEventFile(EventFile* file, std::vector<std::pair<size_t, int64_t>>* steps,
                           TrimCounts* counts) {
  TS_ASSIGN_OR_RETURN(file->bytes, ReadFileToString(file->path));
  size_t offset = 0;
  std::string_view payload;
  FramedRead read;
  while ((read = ReadFramedRecord(file->bytes, &offset, &payload)) == FramedRead::kRecord) {
    Event event;
    // Protobuf takes an int size; a longer payload (a record length bounded only by the file's
    // size) is no event this writer wrote, and must not be cast into a negative size.
    if (payload.size() > static_cast<size_t>(INT_MAX) ||
        !event.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      ++counts->unreadable;
      continue;
    }
    file->payloads.push_back(payload);
    file->keep.push_back(true);
    if (event.what_case() != Event::kFileVersion)
      steps->emplace_back(file->payloads.size() - 1, event.step());
  }
  if (read != FramedRead::kEnd) {
    file->lost_tail = true;
    ++counts->unreadable;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListEventFiles(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return names;
    return absl::PermissionDeniedError(absl::StrCat("cannot list '", dir, "': ", ec.message()));
  }
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    // ".tmp." files are rewrites that a crash interrupted (WriteFileAtomic's temporaries).
    if (name.rfind(kPrefix, 0) != 0 || name.find(".tmp.") != std::string::npos) continue;
    if (entry.is_regular_file(ec)) names.push_back(name);
  }
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    const int64_t ta = CreationSeconds(a), tb = CreationSeconds(b);
    return ta != tb ? ta < tb : a < b;
  });
  std::vector<std::string> paths;
  for (const std::string& name : names) paths.push_back((std::filesystem::path(dir) / name).string());
  return paths;
}

absl::StatusOr<TrimCounts> TruncateEventFiles(const std::string& dir, int64_t last_step) {
  TrimCounts counts;
  TS_ASSIGN_OR_RETURN(std::vector<std::string> paths, ListEventFiles(dir));
  std::vector<EventFile> files(paths.size());
  std::vector<int64_t> steps;
  std::vector<std::pair<size_t, size_t>> where;  // (file, record) of steps[i]
  for (size_t f = 0; f < files.size(); ++f) {
    files[f].path = paths[f];
    std::vector<std::pair<size_t, int64_t>> file_steps;
    TS_RETURN_IF_ERROR(Annotate(ReadEventFile(&files[f], &file_steps, &counts), "TensorBoard history: "));
    for (const auto& [record, step] : file_steps) {
      steps.push_back(step);
      where.emplace_back(f, record);
    }
  }
  const std::vector<bool> keep = StepsToKeep(steps, last_step);
  for (size_t i = 0; i < keep.size(); ++i) {
    files[where[i].first].keep[where[i].second] = keep[i];
    ++(keep[i] ? counts.kept : counts.dropped);
  }
  for (EventFile& file : files) {
    if (!file.lost_tail && std::find(file.keep.begin(), file.keep.end(), false) == file.keep.end()) continue;
    std::string out;
    for (size_t r = 0; r < file.payloads.size(); ++r) {
      if (file.keep[r]) AppendFramedRecord(file.payloads[r], &out);
    }
    TS_RETURN_IF_ERROR(Annotate(WriteFileAtomic(file.path, out), "TensorBoard history: "));
  }
  return counts;
}

}  // namespace tessera::tensorboard
