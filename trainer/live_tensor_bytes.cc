// LiveTensorBytes (live_tensor_bytes.h): a memory-reporting hook pushed as the thread's profiler
// state.
#include "trainer/live_tensor_bytes.h"

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>
#include <atomic>

namespace tessera {

struct LiveTensorBytes::Reporter : c10::MemoryReportingInfoBase {
  std::atomic<int64_t> current{0}, peak{0};

  void reportMemoryUsage(void* /*ptr*/, int64_t alloc_size, size_t /*total_allocated*/,
                         size_t /*total_reserved*/, c10::Device /*device*/) override {
    const int64_t now = current.fetch_add(alloc_size) + alloc_size;
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }
};

LiveTensorBytes::LiveTensorBytes() : reporter_(std::make_shared<Reporter>()) {
  c10::ThreadLocalDebugInfo::_push(c10::DebugInfoKind::PROFILER_STATE, reporter_);
}

LiveTensorBytes::~LiveTensorBytes() { c10::ThreadLocalDebugInfo::_pop(c10::DebugInfoKind::PROFILER_STATE); }

int64_t LiveTensorBytes::current() const { return reporter_->current.load(); }
int64_t LiveTensorBytes::peak() const { return reporter_->peak.load(); }
void LiveTensorBytes::ResetPeak() { reporter_->peak.store(reporter_->current.load()); }

}  // namespace tessera
