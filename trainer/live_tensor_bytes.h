// The bytes of live CPU tensors, counted as LibTorch allocates and frees them: the measure of
// activation memory that VmHWM is not (VmHWM counts the pages the C allocator touched, and glibc
// keeps freed heap memory). It uses LibTorch's memory-reporting hook, the mechanism of the
// PyTorch profiler's profile_memory: while a LiveTensorBytes is alive on a thread, the CPU
// allocator reports each allocation and free made on that thread (and on the autograd engine's
// threads working for it, which inherit the thread's state) with its size.
//
// Only blocks allocated while it is alive are counted: what existed before is neither added nor
// subtracted when freed. Allocations made inside OpenMP workers are not seen (LibTorch allocates
// outputs before its parallel loops, so few are).
#pragma once

#include <cstdint>
#include <memory>

namespace tessera {

class LiveTensorBytes {
 public:
  LiveTensorBytes();
  ~LiveTensorBytes();
  LiveTensorBytes(const LiveTensorBytes&) = delete;
  LiveTensorBytes& operator=(const LiveTensorBytes&) = delete;

  // Bytes allocated and not yet freed since construction, and their peak.
  int64_t current() const;
  int64_t peak() const;
  // The peak from now on starts at the current value.
  void ResetPeak();

 private:
  struct Reporter;
  std::shared_ptr<Reporter> reporter_;
};

}  // namespace tessera
