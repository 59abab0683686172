// Time points of a pipeline step as the device reaches them: on a GPU, events recorded on the
// current stream (host clocks there would time the launches, not the work, since the host runs
// ahead of the device); on the CPU, the host clock. Marks cost no synchronisation; the first
// reading of a step's seconds waits for its last mark once, so the executor reads them only when
// the trainer asks for the step's statistics (log steps).
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <vector>

namespace c10 {
class Event;
}  // namespace c10

namespace tessera::parallel::pipeline {

class StreamClock {
 public:
  explicit StreamClock(torch::Device device);
  ~StreamClock();
  StreamClock(const StreamClock&) = delete;
  StreamClock& operator=(const StreamClock&) = delete;

  // Forgets the marks of the last step (their events are reused).
  void Reset();
  // Records a point now (on the device: where its current stream has got to); its index.
  int Mark();
  // Seconds from mark `from` to mark `to` (to >= from), once the device has reached `to`.
  double Seconds(int from, int to);
  // Whether the marks are device events.
  bool on_device() const { return on_device_; }

 private:
  torch::Device device_;
  bool on_device_;
  int marks_ = 0;
  int synced_through_ = -1;  // the device has reached every mark up to this one
  std::vector<std::chrono::steady_clock::time_point> host_;
  std::vector<std::unique_ptr<c10::Event>> events_;
};

}  // namespace tessera::parallel::pipeline
