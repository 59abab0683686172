// Tests of trainer/checkpoint/checkpoint_writer on one rank (the local communicator; the MPI
// tests run the same code on 2 and 4 ranks): the round trip of every field, async and sync
// saves writing identical files, the async copy semantics, keep-K retention with crashed
// leftovers, refusing to overwrite, and failed saves (file size limit = "disk full", invalid
// slices) reported with the file name while the previous checkpoint stays intact.
#include "checkpoint/checkpoint_writer.h"

#include <ATen/ATen.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_reader.h"
#include "tests/catch_compat.h"
#include "tests/checkpoint/checkpoint_test_util.h"

using namespace tessera::checkpoint;
using namespace tessera::checkpoint::testing;
namespace fs = std::filesystem;

namespace {

SaveState State(int64_t step, double seed) {
  SaveState s;
  s.step = step;
  s.consumed_samples = step * 64;
  s.data_position = absl::StrCat("sample=", step * 64);
  s.config_yaml = "model:\n  dim: 4\n";
  s.layout = Layout{1, 1, 1, 1, 1, 1};
  s.created_unix_time = 1700000000 + step;
  s.tensors.push_back(WholeTensor("tok_embeddings", Logical({5, 4}, seed)));
  s.tensors.push_back(WholeTensor("norm", Logical({4}, seed + 1)));
  s.tensors.push_back(WholeTensor("steps", at::full({2}, step, at::kLong)));
  s.tensors.push_back(WholeTensor("half", Logical({3}, seed).to(at::kBFloat16)));
  s.blobs.push_back({"rng/rank-00000", std::string("\x01\x02\x00\x03", 4)});
  return s;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Everything in a directory tree, file by file, as bytes.
std::map<std::string, std::string> Files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file())
      out[fs::relative(e.path(), dir).string()] = *tessera::ReadFileToString(e.path().string());
  }
  return out;
}

// Limits the size of files this process writes (the "disk" fills at `bytes`); SIGXFSZ is ignored
// so that write() fails with EFBIG instead of killing the process.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_;
  sighandler_t old_handler_;
};

}  // namespace

CATCH_TEST_CASE("writer round trip: metadata, tensors of several dtypes, blobs") {
  TempDir dir("roundtrip");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path()}, comm.get());
  CATCH_REQUIRE(writer.Save(State(3, 0.5)).ok());
  CATCH_CHECK(writer.last_committed() == StepDirPath(dir.path(), 3));
  auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 3));
  CATCH_REQUIRE(reader.ok());
  const Manifest& m = (*reader)->manifest();
  CATCH_CHECK(m.step == 3);
  CATCH_CHECK(m.consumed_samples == 192);
  CATCH_CHECK(m.data_position == "sample=192");
  CATCH_CHECK(m.config_yaml == "model:\n  dim: 4\n");
  CATCH_CHECK(m.layout.virtual_stages == 1);
  CATCH_CHECK(m.created_unix_time == 1700000003);
  CATCH_CHECK(m.writer.rfind("tessera ", 0) == 0);
  CATCH_CHECK(m.files.size() == 1);
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "tok_embeddings"), Logical({5, 4}, 0.5)));
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "steps"), at::full({2}, 3, at::kLong)));
  const at::Tensor half = *ReadTensor(**reader, "half");
  CATCH_CHECK(half.scalar_type() == at::kBFloat16);
  CATCH_CHECK(at::equal(half, Logical({3}, 0.5).to(at::kBFloat16)));
  CATCH_CHECK(*(*reader)->ReadBlob("rng/rank-00000") == std::string("\x01\x02\x00\x03", 4));
  CATCH_CHECK((*reader)->VerifyChecksums().ok());
  // No temporary files are left behind.
  for (const auto& [name, bytes] : Files(StepDirPath(dir.path(), 3)))
    CATCH_CHECK(name.find(".tmp") == std::string::npos);
}

CATCH_TEST_CASE("async and sync saves write identical files, and async copies the tensors at Save") {
  TempDir sync_dir("sync"), async_dir("async");
  LocalComm comm;
  {
    CheckpointWriter writer({.dir = sync_dir.path()}, comm.get());
    CATCH_REQUIRE(writer.Save(State(1, 0.0)).ok());
    CATCH_REQUIRE(writer.Save(State(2, 9.0)).ok());
  }
  {
    CheckpointWriter writer({.dir = async_dir.path(), .async = true}, comm.get());
    SaveState first = State(1, 0.0);
    // The caller's own tensors, passed as views of its parameters as a trainer would.
    at::Tensor live = first.tensors[0].data.clone(), live_norm = first.tensors[1].data.clone();
    first.tensors[0].data = live.detach();
    first.tensors[1].data = live_norm.view({2, 2}).view({4});
    CATCH_REQUIRE(writer.Save(std::move(first)).ok());
    // The caller moves on at once: the checkpoint must hold the old values.
    live.fill_(-1.0f);
    live_norm.fill_(-1.0f);
    CATCH_REQUIRE(writer.Save(State(2, 9.0)).ok());  // waits for step 1 first
    CATCH_REQUIRE(writer.Wait().ok());
    CATCH_CHECK(writer.Wait().ok());  // idempotent
  }
  const auto a = Files(sync_dir.path()), b = Files(async_dir.path());
  CATCH_CHECK(a.size() == 4);  // two steps x (manifest + one shard)
  CATCH_CHECK(a == b);
  auto reader = CheckpointReader::Open(StepDirPath(async_dir.path(), 1));
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "tok_embeddings"), Logical({5, 4}, 0.0)));
}

CATCH_TEST_CASE("async with the host copy deferred to the writer's thread writes what sync writes") {
  // The trainer's protocol: Save returns at once, the caller waits for the snapshot before it
  // changes the tensors. Three saves of the same shapes reuse the snapshot buffers; each must
  // hold its own step's values, byte for byte what a synchronous save of them writes.
  TempDir sync_dir("sync-deferred"), async_dir("async-deferred");
  LocalComm comm;
  {
    CheckpointWriter writer({.dir = sync_dir.path()}, comm.get());
    for (int step = 1; step <= 3; ++step) CATCH_REQUIRE(writer.Save(State(step, step * 3.0)).ok());
    CATCH_CHECK(writer.last_stats().step == 3);
    // A synchronous save's stall is the whole save.
    CATCH_CHECK(writer.last_stats().stall_seconds == writer.last_stats().seconds);
  }
  {
    CheckpointWriter writer({.dir = async_dir.path(), .async = true, .defer_host_copy = true}, comm.get());
    CATCH_CHECK(writer.WaitForSnapshot() == 0.0);  // nothing in flight
    at::Tensor live = Logical({5, 4}, 3.0), live_norm = Logical({4}, 4.0);
    for (int step = 1; step <= 3; ++step) {
      SaveState state = State(step, step * 3.0);
      live.copy_(state.tensors[0].data);
      live_norm.copy_(state.tensors[1].data);
      state.tensors[0].data = live.detach();
      state.tensors[1].data = live_norm.view({2, 2}).view({4});
      CATCH_REQUIRE(writer.Save(std::move(state)).ok());
      writer.WaitForSnapshot();
      // The caller changes its tensors as soon as the snapshot is taken.
      live.fill_(-1.0f);
      live_norm.fill_(-1.0f);
    }
    CATCH_REQUIRE(writer.Wait().ok());
    const SaveStats& stats = writer.last_stats();
    CATCH_CHECK(stats.step == 3);
    CATCH_CHECK(stats.stall_seconds <= stats.seconds);
    // The stats count the shard files (one here), not the manifest.
    CATCH_CHECK(stats.bytes == fs::file_size(StepDirPath(async_dir.path(), 3) + "/shard-00000.bin"));
  }
  CATCH_CHECK(Files(sync_dir.path()) == Files(async_dir.path()));
}

CATCH_TEST_CASE("a save larger than several writeback windows reads back exactly") {
  // 80 MB in one record and 3 MB in the next: the writer starts and waits for writeback every
  // 32 MiB and drops the pages behind it, across record boundaries and unaligned ends.
  TempDir dir("large");
  LocalComm comm;
  const at::Tensor big = at::randn({20'000'000}), after = at::randn({750'001});
  SaveState state = State(1, 0.0);
  state.tensors.push_back(WholeTensor("big", big));
  state.tensors.push_back(WholeTensor("after", after));
  {
    CheckpointWriter writer({.dir = dir.path()}, comm.get());
    CATCH_REQUIRE(writer.Save(std::move(state)).ok());
  }
  auto reader = CheckpointReader::Open(StepDirPath(dir.path(), 1));
  CATCH_REQUIRE(reader.ok());
  CATCH_CHECK((*reader)->VerifyChecksums().ok());
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "big"), big));
  CATCH_CHECK(at::equal(*ReadTensor(**reader, "after"), after));
}

CATCH_TEST_CASE("keep K: older checkpoints and crashed leftovers go only after a newer commit") {
  TempDir dir("keep");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path(), .keep = 2}, comm.get());
  CATCH_REQUIRE(writer.Save(State(10, 0)).ok());
  CATCH_REQUIRE(writer.Save(State(20, 0)).ok());
  // Leftovers of crashed saves: one older than the next commit, one newer.
  CATCH_REQUIRE(tessera::MakeDirs(StepDirPath(dir.path(), 25)).ok());
  CATCH_REQUIRE(WriteFileDurable(StepDirPath(dir.path(), 25) + "/shard-00000.bin.tmp.1", "partial").ok());
  CATCH_REQUIRE(tessera::MakeDirs(StepDirPath(dir.path(), 99)).ok());
  CATCH_CHECK(fs::exists(StepDirPath(dir.path(), 10)));
  CATCH_REQUIRE(writer.Save(State(30, 0)).ok());
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 10)));  // beyond the 2 newest
  CATCH_CHECK(fs::exists(StepDirPath(dir.path(), 20)));
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 25)));  // crashed, older than the commit
  CATCH_CHECK(fs::exists(StepDirPath(dir.path(), 99)));   // newer than the commit: not ours to judge
  CATCH_CHECK(FindLatestValid(dir.path())->step == 30);
}

CATCH_TEST_CASE(
    "a committed step is never overwritten, and leftovers of a crashed attempt at it are cleaned") {
  TempDir dir("exists");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path()}, comm.get());
  // A crashed earlier attempt at step 5 by a bigger job left a shard file of rank 7.
  CATCH_REQUIRE(tessera::MakeDirs(StepDirPath(dir.path(), 5)).ok());
  CATCH_REQUIRE(WriteFileDurable(StepDirPath(dir.path(), 5) + "/shard-00007.bin", "stale").ok());
  CATCH_REQUIRE(writer.Save(State(5, 1)).ok());
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 5) + "/shard-00007.bin"));
  const auto before = Files(dir.path());
  const absl::Status again = writer.Save(State(5, 2));
  CATCH_CHECK(again.code() == absl::StatusCode::kAlreadyExists);
  CATCH_CHECK(Message(again).find("is already committed") != std::string::npos);
  CATCH_CHECK(Files(dir.path()) == before);
}

CATCH_TEST_CASE("a save that hits a full disk names the file and leaves the last checkpoint intact") {
  TempDir dir("full");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path()}, comm.get());
  CATCH_REQUIRE(writer.Save(State(1, 0)).ok());
  const auto before = Files(StepDirPath(dir.path(), 1));
  SaveState big = State(2, 0);
  big.tensors.push_back(WholeTensor("big", at::ones({64, 1024})));  // 256 KiB
  absl::Status status;
  {
    FileSizeLimit limit(64 * 1024);
    status = writer.Save(std::move(big));
  }
  CATCH_CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CATCH_CHECK(Message(status).find("checkpoint step 2 in '" + dir.path() +
                                   "' was not committed: rank 0: writing '" + StepDirPath(dir.path(), 2) +
                                   "/shard-00000.bin.tmp.") != std::string::npos);
  CATCH_CHECK(Message(status).find("File too large") != std::string::npos);
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 2) + "/manifest.pb"));
  CATCH_CHECK(fs::is_empty(StepDirPath(dir.path(), 2)));  // the temporary file was removed
  CATCH_CHECK(Files(StepDirPath(dir.path(), 1)) == before);
  CATCH_CHECK(FindLatestValid(dir.path())->step == 1);
  // The next save succeeds and cleans up the failed attempt's directory.
  CATCH_REQUIRE(writer.Save(State(3, 0)).ok());
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 2)));
}

CATCH_TEST_CASE("async: a failed save surfaces at Wait, or at the next Save, which then does not start") {
  TempDir dir("asyncfail");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path(), .async = true}, comm.get());
  CATCH_REQUIRE(writer.Save(State(1, 0)).ok());
  CATCH_REQUIRE(writer.Wait().ok());
  SaveState big = State(2, 0);
  big.tensors.push_back(WholeTensor("big", at::ones({64, 1024})));
  {
    FileSizeLimit limit(64 * 1024);
    CATCH_REQUIRE(writer.Save(std::move(big)).ok());  // only the host copy happened here
    const absl::Status waited = writer.Wait();
    CATCH_CHECK(waited.code() == absl::StatusCode::kResourceExhausted);
    CATCH_CHECK(Message(waited).find("shard-00000.bin") != std::string::npos);
  }
  // Every failure of an async save, even a slice that is invalid on this rank alone (the other
  // ranks must learn of it too), is reported by the next call.
  SaveState bad = State(3, 0);
  bad.tensors.push_back(BoxSlice("wq", {8, 4}, {6, 0}, at::ones({4, 4})));
  CATCH_REQUIRE(writer.Save(std::move(bad)).ok());
  const absl::Status next = writer.Save(State(4, 0));
  CATCH_CHECK(!next.ok());
  CATCH_CHECK(Message(next).find("the previous checkpoint save (step 3) failed; step 4 was not started") !=
              std::string::npos);
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 4)));
  CATCH_REQUIRE(writer.Save(State(4, 0)).ok());
  CATCH_REQUIRE(writer.Wait().ok());
  CATCH_CHECK(FindLatestValid(dir.path())->step == 4);
}

CATCH_TEST_CASE("an invalid slice fails the save with a message naming the tensor") {
  TempDir dir("invalid");
  LocalComm comm;
  CheckpointWriter writer({.dir = dir.path()}, comm.get());
  SaveState s = State(1, 0);
  s.tensors.push_back(BoxSlice("wq", {8, 4}, {6, 0}, at::ones({4, 4})));  // rows 6..9 of 8
  const absl::Status status = writer.Save(std::move(s));
  CATCH_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CATCH_CHECK(Message(status).find("saving tensor 'wq': box [6:10, 0:4] exceeds dimension 0") !=
              std::string::npos);
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 1) + "/manifest.pb"));
  // Two ranks' worth of slices that leave rows uncovered: caught at commit.
  SaveState partial = State(2, 0);
  partial.tensors.push_back(BoxSlice("wk", {8, 4}, {0, 0}, at::ones({4, 4})));
  const absl::Status uncovered = writer.Save(std::move(partial));
  CATCH_CHECK(
      Message(uncovered).find("tensor 'wk' of shape [8, 4] has 32 elements but its shards cover 16") !=
      std::string::npos);
  CATCH_CHECK(!fs::exists(StepDirPath(dir.path(), 2) + "/manifest.pb"));
}
