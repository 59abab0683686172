// Tests of data/loader: batches in order with the right rows, prefetching that hides a slow
// source (measured wait ~0 once the consumer is slower than the reader), wait time measured when
// the reader is the bottleneck, and read errors surfaced at the batch where they happen.
#include "data/loader.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/catch_compat.h"

namespace tessera::data {
namespace {

// Sample j = [j, j, ..., j]; optionally slow, optionally failing at one index.
class FakeSource : public SampleSource {
 public:
  FakeSource(int64_t tokens, std::chrono::microseconds delay, int64_t fail_at = -1)
      : tokens_(tokens), delay_(delay), fail_at_(fail_at) {}
  int64_t sample_tokens() const override { return tokens_; }
  absl::Status Read(int64_t j, int32_t* out) const override {
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    if (j == fail_at_) return absl::DataLossError("corrupt shard");
    for (int64_t t = 0; t < tokens_; ++t) out[t] = static_cast<int32_t>(j);
    ++reads;
    return absl::OkStatus();
  }
  uint64_t Fingerprint() const override { return 99; }
  mutable std::atomic<int64_t> reads{0};

 private:
  int64_t tokens_;
  std::chrono::microseconds delay_;
  int64_t fail_at_;
};

CATCH_TEST_CASE("the loader yields this rank's rows of consecutive global batches") {
  auto source = std::make_shared<FakeSource>(5, std::chrono::microseconds(0));
  LoaderOptions o;
  o.global_batch = 12;
  o.dp_rank = 2;
  o.dp_size = 3;
  o.start_sample = 100;
  auto loader = Loader::Create(source, o);
  CATCH_REQUIRE(loader.ok());
  for (int b = 0; b < 5; ++b) {
    auto batch = (*loader)->Next();
    CATCH_REQUIRE(batch.ok());
    CATCH_CHECK(batch->batch_start == 100 + 12 * b);
    CATCH_CHECK(batch->first_sample == 100 + 12 * b + 8);
    CATCH_CHECK(batch->rows == 4);
    CATCH_CHECK(batch->row(3)[4] == 100 + 12 * b + 11);
    CATCH_CHECK((*loader)->samples_consumed() == 100 + 12 * (b + 1));
  }
  CATCH_CHECK((*loader)->position().Serialize() ==
              "samples_consumed=160 stream_fingerprint=0000000000000063");
  o.global_batch = 10;  // not a multiple of dp 3
  CATCH_CHECK(!Loader::Create(source, o).ok());
}

CATCH_TEST_CASE("prefetching hides the reading time, the wait is measured") {
  // Reading a batch takes ~24 ms (8 samples x 3 ms). A consumer that computes 60 ms per step finds
  // every batch but the first ready: its waits stay far below the read time.
  auto source = std::make_shared<FakeSource>(4, std::chrono::microseconds(3000));
  LoaderOptions o;
  o.global_batch = 8;
  o.prefetch = 2;
  auto loader = *Loader::Create(source, o);
  CATCH_REQUIRE(loader->Next().ok());
  double later_waits = 0;
  for (int step = 0; step < 5; ++step) {
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    CATCH_REQUIRE(loader->Next().ok());
    later_waits += loader->last_wait_seconds();
  }
  // 30 ms over 5 steps: generous for a loaded CI machine, a quarter of the 5 x 24 ms unhidden.
  CATCH_CHECK(later_waits < 0.030);
  CATCH_CHECK(loader->total_wait_seconds() >= later_waits);
  CATCH_CHECK(loader->batches_returned() == 6);

  // A consumer faster than the reader waits about the read time per batch, and it is measured.
  auto slow = std::make_shared<FakeSource>(4, std::chrono::microseconds(5000));
  auto slow_loader = *Loader::Create(slow, o);
  double waited = 0;
  for (int step = 0; step < 3; ++step) {
    CATCH_REQUIRE(slow_loader->Next().ok());
    waited += slow_loader->last_wait_seconds();
  }
  CATCH_CHECK(waited > 0.05);  // 3 batches x 8 x 5 ms = 120 ms of reading, mostly waited for
}

CATCH_TEST_CASE("a read error reaches the caller at its batch and stays") {
  auto source = std::make_shared<FakeSource>(3, std::chrono::microseconds(0), /*fail_at=*/21);
  LoaderOptions o;
  o.global_batch = 10;
  auto loader = *Loader::Create(source, o);
  CATCH_CHECK(loader->Next().ok());
  CATCH_CHECK(loader->Next().ok());
  auto failed = loader->Next();
  CATCH_REQUIRE(!failed.ok());
  CATCH_CHECK(std::string(failed.status().message()).find("sample 21: corrupt shard") != std::string::npos);
  CATCH_CHECK(!loader->Next().ok());
  CATCH_CHECK(loader->samples_consumed() == 20);
}

CATCH_TEST_CASE("destroying a loader with batches in flight does not hang") {
  auto source = std::make_shared<FakeSource>(1000, std::chrono::microseconds(100));
  LoaderOptions o;
  o.global_batch = 64;
  o.prefetch = 4;
  auto loader = *Loader::Create(source, o);
  CATCH_CHECK(loader->Next().ok());
  loader.reset();
  CATCH_CHECK(source->reads > 0);
}

}  // namespace
}  // namespace tessera::data
