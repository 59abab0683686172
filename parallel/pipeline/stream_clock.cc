// StreamClock (stream_clock.h).
#include "parallel/pipeline/stream_clock.h"

#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace tessera::parallel::pipeline {

StreamClock::StreamClock(torch::Device device) : device_(device), on_device_(!device.is_cpu()) {}

StreamClock::~StreamClock() = default;

void StreamClock::Reset() {
  marks_ = 0;
  synced_through_ = -1;
  host_.clear();
}

int StreamClock::Mark() {
  const int index = marks_++;
  if (!on_device_) {
    host_.push_back(std::chrono::steady_clock::now());
    return index;
  }
  if (index == static_cast<int>(events_.size())) {
    // BACKEND_DEFAULT: an event that keeps time (LibTorch's default event does not).
    events_.push_back(std::make_unique<c10::Event>(device_.type(), c10::EventFlag::BACKEND_DEFAULT));
  }
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device_.type());
  events_[index]->record(impl->getStream(device_));
  return index;
}

double StreamClock::Seconds(int from, int to) {
  if (!on_device_) return std::chrono::duration<double>(host_[to] - host_[from]).count();
  if (to > synced_through_) {
    events_[to]->synchronize();
    synced_through_ = to;
  }
  return events_[from]->elapsedTime(*events_[to]) / 1e3;  // milliseconds
}

}  // namespace tessera::parallel::pipeline
