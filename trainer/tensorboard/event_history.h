// TensorBoard event files across resumes: TruncateEventFiles keeps, in every
// events.out.tfevents.* file of a directory, the events of the history that a checkpoint at
// step S continues (trainer/step_lineage.h, over the files in the order they were created) and
// the file_version records, and drops the rest, so that TensorBoard never shows two values for
// one step. Records are copied byte for byte; a file is rewritten atomically (temporary file +
// rename) only when something is dropped. A torn or corrupt record ends what is read of a file
// (a writer killed mid-record): it and anything after it are dropped.
//
// No Protobuf header here (see tensorboard_writer.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/step_lineage.h"

namespace tessera::tensorboard {

// The event files of `dir` (not its subdirectories), oldest first: by the creation time in the
// name, then by name.
absl::StatusOr<std::vector<std::string>> ListEventFiles(const std::string& dir);

// A missing directory holds no events: an empty count.
absl::StatusOr<TrimCounts> TruncateEventFiles(const std::string& dir, int64_t last_step);

}  // namespace tessera::tensorboard
