// The process grid's options from the config's parallel.* keys: the one place where the
// trainer's config meets parallel/ (which knows nothing of the trainer).
#pragma once

#include <string>

#include "config/config.h"
#include "parallel/process_grid.h"

namespace tessera {

// `device` is the resolved train.device ("cpu" or "cuda", not "auto").
inline parallel::GridOptions GridOptionsFromConfig(const Config& config, const std::string& device) {
  const ParallelConfig& p = config.parallel;
  parallel::GridOptions options;
  options.dims = {p.tp, p.pp, p.dp, p.cp};  // dp 0 = auto
  options.order = p.order;
  options.backend = EnumName(p.backend);
  options.device = device;
  options.rendezvous = p.rendezvous;
  options.comm_timeout_s = p.comm_timeout_s;
  options.startup_timeout_s = p.startup_timeout_s;
  return options;
}

}  // namespace tessera
