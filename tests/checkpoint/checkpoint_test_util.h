// Shared by the checkpoint tests: a fresh temporary directory per test, a one-rank local
// communicator, deterministic "logical" tensors, and a checkpoint written as if by several
// ranks (each rank's shard file and report made with the storage layer, then rank 0's merge and
// commit), so that single-process tests can read layouts that several ranks wrote.
#pragma once

#include <ATen/ATen.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/durable_io.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/tensor_slices.h"
#include "core/file_util.h"
#include "parallel/comm/local_comm.h"
#include "parallel/comm/watchdog.h"

namespace tessera::checkpoint::testing {

// A new empty directory under the build tree (or /tmp), removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
#ifdef TESSERA_BINARY_DIR
    const std::string base = TESSERA_BINARY_DIR "/tests/tmp";
#else
    const std::string base = "/tmp";
#endif
    path_ = absl::StrCat(base, "/ckpt-", tag, "-", ::getpid(), "-", counter++);
    std::filesystem::remove_all(path_);
    (void)MakeDirs(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A one-rank communicator (the collectives are the identity).
class LocalComm {
 public:
  LocalComm()
      : watchdog_(parallel::Watchdog::Options{}),
        comm_(parallel::CreateLocalCommunicator(&watchdog_, "ckpt-test", 0)) {}
  parallel::Communicator& get() { return *comm_; }

 private:
  parallel::Watchdog watchdog_;
  std::unique_ptr<parallel::Communicator> comm_;
};

// Distinct, deterministic values: element i of the flattened tensor is seed + i * 0.5.
inline at::Tensor Logical(std::vector<int64_t> shape, double seed = 0) {
  return (at::arange(NumElements(shape), at::kDouble) * 0.5 + seed).to(at::kFloat).reshape(shape);
}

// The slices one simulated rank saves.
struct RankSlices {
  std::vector<TensorSlice> tensors;
  std::vector<std::pair<std::string, std::string>> blobs;
};

// Writes STEP_DIR with one shard file per entry of `ranks` and commits its manifest.
inline absl::Status WriteAsRanks(const std::string& dir, int64_t step, const std::vector<RankSlices>& ranks) {
  const std::string step_dir = StepDirPath(dir, step);
  if (absl::Status s = MakeDirs(step_dir); !s.ok()) return s;
  std::vector<RankReport> reports;
  for (size_t r = 0; r < ranks.size(); ++r) {
    RankReport report;
    report.rank = static_cast<int32_t>(r);
    report.step = step;
    const std::string name = ShardFileName(static_cast<int>(r));
    auto writer = ShardFileWriter::Create(step_dir + "/" + name, static_cast<int>(r));
    if (!writer.ok()) return writer.status();
    for (const TensorSlice& slice : ranks[r].tensors) {
      const at::Tensor data = slice.data.contiguous();
      auto record = (*writer)->Append(data.data_ptr(), data.nbytes());
      if (!record.ok()) return record.status();
      report.tensors.push_back(TensorEntry{slice.name,
                                           *DTypeOf(data.scalar_type()),
                                           slice.global_shape,
                                           {ShardRecord{name, record->offset, record->length, slice.region,
                                                        record->crc32c, static_cast<int32_t>(r)}}});
    }
    for (const auto& [blob_name, bytes] : ranks[r].blobs) {
      auto record = (*writer)->Append(bytes.data(), bytes.size());
      if (!record.ok()) return record.status();
      report.blobs.push_back(BlobEntry{blob_name, name, record->offset, record->length, record->crc32c,
                                       static_cast<int32_t>(r)});
    }
    auto length = (*writer)->Commit();
    if (!length.ok()) return length.status();
    report.file = ShardFileEntry{name, *length, static_cast<int32_t>(r)};
    reports.push_back(std::move(report));
  }
  Manifest m;
  m.step = step;
  m.layout.world_size = static_cast<int32_t>(ranks.size());
  if (absl::Status s = MergeRankReports(reports, m, step_dir); !s.ok()) return s;
  return WriteFileDurable(step_dir + "/" + kManifestFileName, SerializeManifest(m));
}

// Rows [begin, end) of dimension `dim` as a box slice of `full`.
inline TensorSlice RowsSlice(const std::string& name, const at::Tensor& full, int dim, int64_t begin,
                             int64_t end) {
  std::vector<int64_t> offset(full.dim(), 0);
  offset[dim] = begin;
  return BoxSlice(name, full.sizes().vec(), offset, full.narrow(dim, begin, end - begin).contiguous());
}

// The tensors "w" [6, 4], its moment "optim.exp_avg/w" (2 w) and "n" [5] as one rank saves them.
inline std::vector<RankSlices> OneRankLayout(const at::Tensor& w, const at::Tensor& n) {
  std::vector<RankSlices> ranks(1);
  ranks[0].tensors = {WholeTensor("w", w), WholeTensor("optim.exp_avg/w", w * 2), WholeTensor("n", n)};
  return ranks;
}

// The same tensors as three ranks save them: "w" in row blocks, the moment in uneven flat
// ranges (ZeRO), "n" replicated on every rank.
inline std::vector<RankSlices> ThreeRankLayout(const at::Tensor& w, const at::Tensor& n) {
  std::vector<RankSlices> ranks(3);
  const int64_t rows[] = {0, 2, 3, 6}, cuts[] = {0, 7, 8, 24};
  const at::Tensor moment = (w * 2).reshape({-1});
  for (int r = 0; r < 3; ++r) {
    ranks[r].tensors.push_back(RowsSlice("w", w, 0, rows[r], rows[r + 1]));
    ranks[r].tensors.push_back(
        FlatSlice("optim.exp_avg/w", {6, 4}, cuts[r], moment.slice(0, cuts[r], cuts[r + 1]).contiguous()));
    ranks[r].tensors.push_back(WholeTensor("n", n));
  }
  return ranks;
}

}  // namespace tessera::checkpoint::testing
