// The machine flags of `tessera validate` and `tessera plan`, which the step-time estimate
// (step_time_estimate.h) needs and a config does not hold: the peak, the achieved fraction of it,
// the bandwidths inside and across nodes, GPUs per node, memory bandwidth.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "cli/args.h"
#include "cli/step_time_estimate.h"
#include "config/config.h"

namespace tessera::cli {

std::vector<Flag> HardwareFlags();

// DefaultHardware(c) with the flags given applied; errors name the flag.
absl::StatusOr<Hardware> HardwareFromArgs(const Args& args, const Config& c);

// "989 TFLOP/s (H100/H200 SXM data sheet, dense bf16) x 0.70 achieved in GEMMs; 8 GPUs per node,
// 360 GB/s inside a node, 40 GB/s across nodes (bus bandwidth per GPU); HBM 3350 GB/s".
std::string DescribeHardware(const Hardware& hw);

}  // namespace tessera::cli
