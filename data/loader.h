// The prefetching loader: a background thread reads this data-parallel rank's slice of the next
// global batches into a bounded queue while the trainer computes, so that a step normally finds
// its batch ready. Next() measures how long the caller waited (the `data_wait` metric).
//
// Position: the loader starts at a global sample index (DataPosition::samples_consumed) and
// reads global batches [start + b * global_batch, ...). samples_consumed() after k batches is
// start + k * global_batch on every rank, whatever the DP degree, so a checkpoint taken there
// resumes exactly under any other layout or global batch size.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sample_stream.h"

namespace tessera::data {

struct LoaderOptions {
  int64_t global_batch = 1;  // samples per optimizer step, all ranks together
  int dp_rank = 0;
  int dp_size = 1;
  int64_t start_sample = 0;  // global samples already consumed
  int prefetch = 2;          // batches read ahead (>= 1)
};

// This rank's rows of one global batch.
struct LocalBatch {
  int64_t batch_start = 0;   // first global sample of the global batch
  int64_t first_sample = 0;  // global index of row 0 (rows are consecutive samples)
  int64_t rows = 0;
  int64_t sample_tokens = 0;    // seq_len + 1: inputs are [0, seq_len), targets [1, seq_len]
  std::vector<int32_t> tokens;  // rows x sample_tokens, row-major

  const int32_t* row(int64_t r) const { return tokens.data() + r * sample_tokens; }
};

class Loader {
 public:
  static absl::StatusOr<std::unique_ptr<Loader>> Create(std::shared_ptr<const SampleSource> source,
                                                        const LoaderOptions& options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next global batch's slice for this rank; blocks until it is read. A read error (a
  // corrupt shard) is returned here, for the batch where it happened.
  absl::StatusOr<LocalBatch> Next();

  // Global samples consumed once the batches returned so far are trained on.
  int64_t samples_consumed() const { return next_batch_start_; }
  DataPosition position() const { return {samples_consumed(), source_->Fingerprint()}; }
  // Seconds the last Next() waited for the background thread, and the sum over all calls.
  double last_wait_seconds() const { return last_wait_; }
  double total_wait_seconds() const { return total_wait_; }
  int64_t batches_returned() const { return batches_; }

 private:
  Loader() = default;
  void Run();

  std::shared_ptr<const SampleSource> source_;
  LoaderOptions options_;
  int64_t next_batch_start_ = 0;
  int64_t batches_ = 0;
  double last_wait_ = 0, total_wait_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::StatusOr<LocalBatch>> ready_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tessera::data
