// Tests of parallel/rendezvous: ranks are threads of this process, exchanging a blob through
// TCP on the loopback interface or a file; the failure cases check that every wait ends with an
// error naming the address or path.
#include "parallel/comm/rendezvous.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "tests/catch_compat.h"

using tessera::parallel::FileRendezvous;
using tessera::parallel::RendezvousOptions;
using tessera::parallel::TcpRendezvous;

namespace {

// A port unlikely to collide with another test run on this machine.
int TestPort(int offset) { return 20000 + (getpid() % 20000) + offset; }

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

std::string Blob() {
  std::string blob(128, '\0');
  for (int i = 0; i < 128; ++i) blob[i] = static_cast<char>(i * 7 + 3);  // includes NUL bytes
  return blob;
}

}  // namespace

CATCH_TEST_CASE("TCP rendezvous hands rank 0's blob to 4 ranks, whoever starts first") {
  const int port = TestPort(0);
  const std::string blob = Blob();
  std::vector<std::future<absl::StatusOr<std::string>>> ranks;
  // Ranks 1-3 start before rank 0 listens: they must retry, not fail.
  for (int r = 3; r >= 0; --r) {
    ranks.push_back(std::async(std::launch::async, [=] {
      if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      RendezvousOptions o{r, 4, "job-1", 20};
      return TcpRendezvous("127.0.0.1", port, o, r == 0 ? blob : "");
    }));
  }
  for (auto& f : ranks) {
    auto got = f.get();
    CATCH_REQUIRE(got.ok());
    CATCH_CHECK(*got == blob);
  }
}

CATCH_TEST_CASE("TCP rendezvous: a rank of another job or world size is rejected with a reason") {
  const int port = TestPort(1);
  auto server = std::async(std::launch::async, [=] {
    return TcpRendezvous("", port, RendezvousOptions{0, 2, "job-A", 3}, "id");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto other_job = TcpRendezvous("localhost", port, RendezvousOptions{1, 2, "job-B", 5}, "");
  CATCH_REQUIRE_FALSE(other_job.ok());
  CATCH_CHECK(Contains(other_job.status(), "rank 0 serves job 'job-A', not 'job-B'"));
  auto other_size = TcpRendezvous("localhost", port, RendezvousOptions{1, 3, "job-A", 5}, "");
  CATCH_REQUIRE_FALSE(other_size.ok());
  CATCH_CHECK(Contains(other_size.status(), "says the world size is 3 but rank 0 has 2"));
  // Nobody valid came: rank 0 gives up after its timeout, naming the missing rank.
  auto served = server.get();
  CATCH_REQUIRE_FALSE(served.ok());
  CATCH_CHECK(Contains(served.status(), "only 1 of 2 ranks arrived within 3 s"));
  CATCH_CHECK(Contains(served.status(), "missing ranks: 1"));
}

CATCH_TEST_CASE("TCP rendezvous: an unreachable rank 0 is an error naming MASTER_ADDR and MASTER_PORT") {
  const auto start = std::chrono::steady_clock::now();
  auto got = TcpRendezvous("127.0.0.1", TestPort(2), RendezvousOptions{2, 4, "job", 1.5}, "");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CATCH_REQUIRE_FALSE(got.ok());
  CATCH_CHECK(Contains(got.status(), "rank 2: rendezvous with rank 0 at MASTER_ADDR=127.0.0.1 MASTER_PORT="));
  CATCH_CHECK(Contains(got.status(), "unreachable for 1.5 s"));
  // The timeout bounds the wait (plus one retry interval and a connect attempt).
  CATCH_CHECK(took < 8);

  auto unresolvable =
      TcpRendezvous("no-such-host.invalid", TestPort(3), RendezvousOptions{1, 2, "job", 0.5}, "");
  CATCH_REQUIRE_FALSE(unresolvable.ok());
  CATCH_CHECK(Contains(unresolvable.status(), "MASTER_ADDR=no-such-host.invalid"));

  auto no_addr = TcpRendezvous("", 29500, RendezvousOptions{1, 2, "job", 1}, "");
  CATCH_REQUIRE_FALSE(no_addr.ok());
  CATCH_CHECK(Contains(no_addr.status(), "needs MASTER_ADDR"));
  auto no_port = TcpRendezvous("h", 0, RendezvousOptions{1, 2, "job", 1}, "");
  CATCH_REQUIRE_FALSE(no_port.ok());
  CATCH_CHECK(Contains(no_port.status(), "needs MASTER_PORT"));
  // A world of one needs nobody.
  CATCH_CHECK(*TcpRendezvous("", 0, RendezvousOptions{0, 1, "", 1}, "x") == "x");
}

CATCH_TEST_CASE("file rendezvous: a stale file of another job is ignored, rank 0 replaces it") {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("tessera-rdv-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/nccl-id";
  // A file left by an earlier job.
  auto stale = FileRendezvous(path, RendezvousOptions{0, 3, "old-job", 5}, "old");
  CATCH_REQUIRE(stale.ok());
  const std::string blob = Blob();
  std::vector<std::future<absl::StatusOr<std::string>>> ranks;
  for (int r = 2; r >= 0; --r) {
    ranks.push_back(std::async(std::launch::async, [=] {
      if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      return FileRendezvous(path, RendezvousOptions{r, 3, "new-job", 10}, r == 0 ? blob : "");
    }));
  }
  for (auto& f : ranks) {
    auto got = f.get();
    CATCH_REQUIRE(got.ok());
    CATCH_CHECK(*got == blob);
  }
  // Nobody writes for this job: the reader gives up, saying what it found.
  auto missing = FileRendezvous(path, RendezvousOptions{1, 3, "third-job", 0.5}, "");
  CATCH_REQUIRE_FALSE(missing.ok());
  CATCH_CHECK(Contains(missing.status(), "no rendezvous file from rank 0 of job 'third-job'"));
  CATCH_CHECK(Contains(missing.status(), "found a stale file of job 'new-job'"));
  auto no_job = FileRendezvous(path, RendezvousOptions{1, 3, "", 1}, "");
  CATCH_REQUIRE_FALSE(no_job.ok());
  CATCH_CHECK(Contains(no_job.status(), "needs a job id"));
  std::filesystem::remove_all(dir);
}
