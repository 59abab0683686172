// The machine flags of validate and plan (hardware_args.h).
#include "cli/hardware_args.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace tessera::cli {

std::vector<Flag> HardwareFlags() {
  return {Flag::Value("peak-tflops", "a positive number of TFLOP/s"),
          Flag::Value("gemm-efficiency", "a fraction in (0, 1]"),
          Flag::Value("intra-node-gb-s", "a positive number of GB/s"),
          Flag::Value("inter-node-gb-s", "a positive number of GB/s"),
          Flag::Value("gpus-per-node", "a positive integer"),
          Flag::Value("memory-gb-s", "a positive number of GB/s")};
}

namespace {

// The flag's value when it is given and positive; `fallback` when it is absent.
absl::StatusOr<double> Positive(const Args& args, const std::string& name, double fallback,
                                const std::string& what) {
  auto v = args.GetDouble(name, fallback);
  if (!v.ok()) return v.status();
  if (!(*v > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s = %g: expected %s", name, *v, what));
  }
  return v;
}

}  // namespace

absl::StatusOr<Hardware> HardwareFromArgs(const Args& args, const Config& c) {
  Hardware hw = DefaultHardware(c);
  if (args.Has("peak-tflops")) hw.peak_basis = "--peak-tflops";
  auto peak = Positive(args, "peak-tflops", hw.peak_tflops, "a positive number of TFLOP/s");
  if (!peak.ok()) return peak.status();
  auto efficiency = Positive(args, "gemm-efficiency", hw.gemm_efficiency, "a fraction of the peak in (0, 1]");
  if (!efficiency.ok()) return efficiency.status();
  if (*efficiency > 1.0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--gemm-efficiency = %g: expected a fraction of the peak in (0, 1]", *efficiency));
  }
  auto intra = Positive(args, "intra-node-gb-s", hw.intra_node_gb_s, "a positive number of GB/s");
  if (!intra.ok()) return intra.status();
  auto inter = Positive(args, "inter-node-gb-s", hw.inter_node_gb_s, "a positive number of GB/s");
  if (!inter.ok()) return inter.status();
  auto memory = Positive(args, "memory-gb-s", hw.memory_gb_s, "a positive number of GB/s");
  if (!memory.ok()) return memory.status();
  auto per_node = args.GetInt("gpus-per-node", hw.gpus_per_node, {.min = 1});
  if (!per_node.ok()) return per_node.status();
  hw.peak_tflops = *peak;
  hw.gemm_efficiency = *efficiency;
  hw.intra_node_gb_s = *intra;
  hw.inter_node_gb_s = *inter;
  hw.memory_gb_s = *memory;
  hw.gpus_per_node = *per_node;
  return hw;
}

std::string DescribeHardware(const Hardware& hw) {
  return absl::StrFormat(
      "%g TFLOP/s (%s) x %.2f achieved in matrix products; %d GPUs per node, %g GB/s inside a node, %g "
      "GB/s across nodes (bus bandwidth per GPU); memory %g GB/s",
      hw.peak_tflops, hw.peak_basis, hw.gemm_efficiency, hw.gpus_per_node, hw.intra_node_gb_s,
      hw.inter_node_gb_s, hw.memory_gb_s);
}

}  // namespace tessera::cli
