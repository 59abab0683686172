// Which records of a step-indexed log (metrics.jsonl, TensorBoard event files) belong to the
// history that a checkpoint at step S continues. Records are taken in the order they were
// written; a record whose step is not above the one before it starts a new branch (a rollback
// to an earlier checkpoint, or an attempt resumed from one) and abandons the records it repeats.
// Of the last branch, the records with step <= S stay. So a run that was rolled back, killed or
// requeued any number of times keeps each step once, with the value its final history had.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tessera {

// What a truncation kept and dropped, for the log line of a resume.
struct TrimCounts {
  int64_t kept = 0;        // records of steps <= S in the final history
  int64_t dropped = 0;     // records after S, or of an abandoned branch
  int64_t unreadable = 0;  // torn or malformed records (a writer killed mid-record), dropped
};

// keep[i] says whether the record with steps[i] stays.
inline std::vector<bool> StepsToKeep(const std::vector<int64_t>& steps, int64_t last_step) {
  std::vector<std::size_t> branch;  // indices of the current branch, steps strictly increasing
  for (std::size_t i = 0; i < steps.size(); ++i) {
    while (!branch.empty() && steps[branch.back()] >= steps[i]) branch.pop_back();
    branch.push_back(i);
  }
  std::vector<bool> keep(steps.size(), false);
  for (std::size_t i : branch) keep[i] = steps[i] <= last_step;
  return keep;
}

}  // namespace tessera
