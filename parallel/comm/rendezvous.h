// Hands a small blob (the NCCL unique id, 128 bytes) from rank 0 to every other rank without MPI:
// over TCP, rank 0 serving it at MASTER_ADDR:MASTER_PORT, or through a file on a filesystem that
// every node shares. Both check a job id, so that a stale server or file of another job is never
// used, and both give up with an error that names the address or path after a timeout: an
// unreachable rendezvous is a clear error before training starts, never a hang.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tessera::parallel {

struct RendezvousOptions {
  int rank = 0;
  int world_size = 1;
  // Every rank of one launch passes the same id (LaunchInfo::job_id); the TCP server rejects
  // and the file readers ignore anything else.
  std::string job_id;
  double timeout_s = 300;
};

// All ranks call it; rank 0 passes the blob, the others receive it. Rank 0 listens on `port` on
// every interface and returns once every other rank has the blob; the others connect to
// host:port, retrying until rank 0 is up or the timeout passes.
absl::StatusOr<std::string> TcpRendezvous(const std::string& host, int port, const RendezvousOptions& options,
                                          const std::string& blob);

// All ranks call it; rank 0 removes a stale `path`, writes the blob to a temporary name and
// renames it to `path`; the others poll for `path` until it holds this job's id. Needs a
// non-empty job id (a file outlives its job).
absl::StatusOr<std::string> FileRendezvous(const std::string& path, const RendezvousOptions& options,
                                           const std::string& blob);

}  // namespace tessera::parallel
