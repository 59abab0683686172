// Times the checkpoint writer and reader on one rank over GB gigabytes of fp32 tensors, for
// scripts/bench/checkpoint_vs_dd.sh, which runs dd on the same bytes beside it. Without a model
// or a training step, so that states larger than this machine can train (8 GB) are measured too.
//
//   checkpoint_bench save DIR GB [TENSOR_MB]   a synchronous save of step 1 into DIR (fresh)
//   checkpoint_bench save_direct DIR GB [TENSOR_MB]   the same with O_DIRECT shard writes
//   checkpoint_bench load DIR                  reads every tensor of DIR's newest checkpoint
//
// Output, one line: `save bytes=B seconds=S` (S: Save's call, commit included) or
// `load bytes=B seconds=S` (S: opening the checkpoint and reading every tensor, checksums
// verified). The tensors' values are random; the files' pages are the script's to drop.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "parallel/comm/local_comm.h"
#include "parallel/comm/watchdog.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int Save(const std::string& dir, double gb, double tensor_mb, bool direct_io) {
  const int64_t per_tensor = static_cast<int64_t>(tensor_mb * 1e6 / 4);
  const int64_t total = static_cast<int64_t>(gb * 1e9 / 4);
  checkpoint::SaveState state;
  state.step = 1;
  state.config_yaml = "bench: true\n";
  state.layout = checkpoint::Layout{1, 1, 1, 1, 0, 1};
  for (int64_t begin = 0, i = 0; begin < total; begin += per_tensor, ++i) {
    const int64_t n = std::min(per_tensor, total - begin);
    state.tensors.push_back(checkpoint::WholeTensor(absl::StrCat("t", i), at::randn({n})));
  }
  parallel::Watchdog watchdog(parallel::Watchdog::Options{});
  auto comm = parallel::CreateLocalCommunicator(&watchdog, "checkpoint-bench", 0);
  checkpoint::CheckpointWriter writer({.dir = dir, .direct_io = direct_io}, *comm);
  const auto start = Clock::now();
  if (absl::Status s = writer.Save(std::move(state)); !s.ok()) {
    std::fprintf(stderr, "save failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("save bytes=%llu seconds=%.4f\n", static_cast<unsigned long long>(writer.last_stats().bytes),
              Since(start));
  return 0;
}

int Load(const std::string& dir) {
  const auto start = Clock::now();
  auto found = checkpoint::FindLatestValid(dir, checkpoint::Verify::kStructure);
  if (!found.ok()) {
    std::fprintf(stderr, "%s\n", std::string(found.status().message()).c_str());
    return 1;
  }
  auto reader = checkpoint::CheckpointReader::Open(found->path);
  if (!reader.ok()) {
    std::fprintf(stderr, "%s\n", std::string(reader.status().message()).c_str());
    return 1;
  }
  uint64_t bytes = 0;
  for (const checkpoint::TensorEntry& t : (*reader)->manifest().tensors) {
    auto tensor = checkpoint::ReadTensor(**reader, t.name);
    if (!tensor.ok()) {
      std::fprintf(stderr, "%s\n", std::string(tensor.status().message()).c_str());
      return 1;
    }
    bytes += tensor->nbytes();
  }
  std::printf("load bytes=%llu seconds=%.4f\n", static_cast<unsigned long long>(bytes), Since(start));
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  double gb = 0, tensor_mb = 64;
  if ((mode == "save" || mode == "save_direct") && (argc == 4 || argc == 5) &&
      absl::SimpleAtod(argv[3], &gb) && gb > 0 &&
      (argc == 4 || (absl::SimpleAtod(argv[4], &tensor_mb) && tensor_mb > 0))) {
    return tessera::Save(argv[2], gb, tensor_mb, mode == "save_direct");
  }
  if (mode == "load" && argc == 3) return tessera::Load(argv[2]);
  std::fprintf(stderr, "usage: %s save|save_direct DIR GB [TENSOR_MB] | load DIR\n", argv[0]);
  return 2;
}
