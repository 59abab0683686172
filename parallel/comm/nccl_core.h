// NCCL and the CUDA runtime, wrapped without LibTorch: communicators (init from a unique id,
// ncclCommSplit), the collectives on raw device pointers and a stream, and CUDA streams and
// events. It compiles wherever the CUDA toolkit and nccl.h exist, whatever LibTorch was built
// with; nccl_comm.cc puts the Communicator interface on top. Handles are opaque (void* for
// cudaStream_t) so that this header needs neither cuda_runtime.h nor nccl.h.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tessera::parallel::nccl {

enum class DataType { kFloat32, kFloat64, kBFloat16, kFloat16, kInt32, kInt64 };
enum class RedOp { kSum, kAvg, kMax };

// "NCCL 2.32.3" (the library loaded), or why it is unknown.
std::string VersionString();
// "CUDA runtime 13.0, driver 12.8".
std::string CudaVersionString();
// Visible CUDA devices (0 without a driver or device).
int DeviceCount();
absl::Status SetDevice(int device);
// A new NCCL unique id (128 bytes), made by one rank and handed to the others.
absl::StatusOr<std::string> GetUniqueId();

// A non-blocking CUDA stream on one device (created with cudaStreamNonBlocking, so it never
// serialises with the legacy default stream).
class Stream {
 public:
  static absl::StatusOr<std::unique_ptr<Stream>> Create(int device);
  ~Stream();
  void* handle() const { return stream_; }

 private:
  Stream(void* stream, int device) : stream_(stream), device_(device) {}
  void* stream_;
  int device_;
};

// A CUDA event without timing.
class Event {
 public:
  static absl::StatusOr<std::unique_ptr<Event>> Create(int device);
  ~Event();
  absl::Status Record(void* stream);
  // Makes `stream` wait for the work recorded (without blocking the host).
  absl::Status MakeStreamWait(void* stream);
  // True once the recorded work finished; errors (a faulted device) count as finished, and are
  // then reported by the communicator's health check.
  bool Query() const;

 private:
  Event(void* event, int device) : event_(event), device_(device) {}
  void* event_;
  int device_;
};

class Comm {
 public:
  // ncclCommInitRank: blocks until all `nranks` ranks called it with the same id.
  static absl::StatusOr<std::unique_ptr<Comm>> InitRank(int nranks, int rank, const std::string& unique_id,
                                                        int device);
  ~Comm();  // ncclCommDestroy, or ncclCommAbort after an error
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  // ncclCommSplit: every rank of this communicator calls it; nullptr for color < 0.
  absl::StatusOr<std::unique_ptr<Comm>> Split(int color, int key);

  // The collectives, enqueued on `stream`; all ranks of the communicator must call them in the
  // same order (the contract of communicator.h).
  absl::Status AllReduce(const void* send, void* recv, size_t count, DataType type, RedOp op, void* stream);
  absl::Status ReduceScatter(const void* send, void* recv, size_t recv_count, DataType type, RedOp op,
                             void* stream);
  absl::Status AllGather(const void* send, void* recv, size_t send_count, DataType type, void* stream);
  absl::Status Broadcast(void* buffer, size_t count, DataType type, int root, void* stream);
  // Point-to-point inside GroupStart()/GroupEnd(), so a batch is posted as one.
  absl::Status GroupStart();
  absl::Status GroupEnd();
  absl::Status Send(const void* buffer, size_t count, DataType type, int peer, void* stream);
  absl::Status Recv(void* buffer, size_t count, DataType type, int peer, void* stream);

  // ncclCommGetAsyncError: a network failure or a peer's abort shows here.
  absl::Status AsyncError();
  // Stops everything in flight on this communicator (watchdog, before exiting).
  void Abort();

 private:
  Comm(void* comm, int rank, int size, int device) : comm_(comm), rank_(rank), size_(size), device_(device) {}
  void* comm_;
  int rank_, size_, device_;
  bool failed_ = false;
};

}  // namespace tessera::parallel::nccl
