// Learning-rate schedule: linear warmup from 0 to the peak over `warmup_steps`, then cosine
// decay to `min_lr` at `total_steps` (and min_lr after that).
#pragma once

#include <cstdint>

namespace tessera {

struct LrSchedule {
  double peak_lr;
  double min_lr;
  int64_t warmup_steps;
  int64_t total_steps;

  // Learning rate of optimizer step `step` (0-based: the first update is step 0).
  double At(int64_t step) const;
};

}  // namespace tessera
