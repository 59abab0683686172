// Links parallel/nccl_core against the CUDA runtime and NCCL wherever both exist, also with a
// CPU LibTorch, and prints what it finds: NCCL's version, CUDA's, the devices. Without a GPU it
// checks that asking for a device fails with a message rather than a crash.
#include <cstdio>
#include <string>

#include "parallel/comm/nccl_core.h"

using namespace tessera::parallel::nccl;

int main() {
  const std::string nccl = VersionString();
  std::printf("%s; %s; %d CUDA devices\n", nccl.c_str(), CudaVersionString().c_str(), DeviceCount());
  if (nccl.rfind("NCCL 2.", 0) != 0) {
    std::printf("FAIL: unexpected NCCL version string\n");
    return 1;
  }
  if (DeviceCount() == 0) {
    auto stream = Stream::Create(0);
    if (stream.ok()) {
      std::printf("FAIL: a stream on a machine without a GPU\n");
      return 1;
    }
    std::printf("no GPU: %s\n", std::string(stream.status().message()).c_str());
    return 0;
  }
  // A world of one on device 0: init, an all-reduce of nothing, destroy.
  auto id = GetUniqueId();
  if (!id.ok()) {
    std::printf("FAIL: %s\n", std::string(id.status().message()).c_str());
    return 1;
  }
  auto comm = Comm::InitRank(1, 0, *id, 0);
  if (!comm.ok()) {
    std::printf("FAIL: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  std::printf("NCCL communicator of 1 rank on device 0: ok\n");
  return 0;
}
