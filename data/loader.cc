// Producer/consumer with a bounded deque. The producer stops at the first read error and
// queues it, so the consumer sees batches in order and then the error.
#include "data/loader.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace tessera::data {

absl::StatusOr<std::unique_ptr<Loader>> Loader::Create(std::shared_ptr<const SampleSource> source,
                                                       const LoaderOptions& options) {
  if (!source) return absl::InvalidArgumentError("loader: no sample source");
  if (options.prefetch < 1) return absl::InvalidArgumentError("loader: prefetch must be >= 1");
  if (options.start_sample < 0) return absl::InvalidArgumentError("loader: negative start sample");
  // Validates the layout once, with the error the user needs.
  TS_RETURN_IF_ERROR(
      DataParallelSlice(options.start_sample, options.global_batch, options.dp_rank, options.dp_size)
          .status());
  std::unique_ptr<Loader> loader(new Loader());
  loader->source_ = std::move(source);
  loader->options_ = options;
  loader->next_batch_start_ = options.start_sample;
  loader->thread_ = std::thread([l = loader.get()] { l->Run(); });
  return loader;
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Loader::Run() {
  const int64_t tokens = source_->sample_tokens();
  for (int64_t b = 0;; ++b) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < options_.prefetch; });
      if (stop_) return;
    }
    const int64_t batch_start = options_.start_sample + b * options_.global_batch;
    absl::StatusOr<LocalBatch> result;
    auto range = DataParallelSlice(batch_start, options_.global_batch, options_.dp_rank, options_.dp_size);
    if (!range.ok()) {
      result = range.status();
    } else {
      LocalBatch batch;
      batch.batch_start = batch_start;
      batch.first_sample = range->begin;
      batch.rows = range->count;
      batch.sample_tokens = tokens;
      batch.tokens.resize(static_cast<size_t>(range->count * tokens));
      absl::Status status;
      for (int64_t r = 0; r < range->count && status.ok(); ++r) {
        status = source_->Read(range->begin + r, batch.tokens.data() + r * tokens);
        if (!status.ok()) {
          status = Annotate(status, absl::StrCat("reading sample ", range->begin + r, ": "));
        }
      }
      if (status.ok()) {
        result = std::move(batch);
      } else {
        result = status;
      }
    }
    const bool failed = !result.ok();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(result));
    }
    cv_.notify_all();
    if (failed) return;
  }
}

absl::StatusOr<LocalBatch> Loader::Next() {
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<LocalBatch> result;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty(); });
    if (ready_.front().ok()) {
      result = std::move(ready_.front());
      ready_.pop_front();
    } else {
      result = ready_.front().status();  // stays queued: every later call reports it too
    }
  }
  cv_.notify_all();
  last_wait_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  total_wait_ += last_wait_;
  if (!result.ok()) return result.status();
  next_batch_start_ = result->batch_start + options_.global_batch;
  ++batches_;
  return result;
}

}  // namespace tessera::data
