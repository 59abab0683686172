// Tests of parallel/watchdog in one process: deadlines, the start-up and regular timeouts, the
// report's content, the prober and notifier hooks, health checks, asynchronous completion and
// signals. on_fatal stands in for the exit, so the report can be read.
#include "parallel/comm/watchdog.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/catch_compat.h"

using tessera::parallel::FailureKind;
using tessera::parallel::OpRecord;
using tessera::parallel::ProbeResult;
using tessera::parallel::Watchdog;

namespace {

struct Fatal {
  std::promise<std::pair<int, std::string>> promise;
  std::atomic<int> calls{0};
  std::function<void(int, const std::string&)> Callback() {
    return [this](int code, const std::string& report) {
      if (calls.fetch_add(1) == 0) promise.set_value({code, report});
    };
  }
  // Waits for the report (at most `seconds`).
  std::pair<int, std::string> Get(double seconds) {
    auto future = promise.get_future();
    if (future.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready) return {-1, ""};
    return future.get();
  }
};

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

Watchdog::Options Fast(Fatal* fatal) {
  Watchdog::Options o;
  o.world_rank = 2;
  o.world_size = 4;
  o.startup_timeout_s = 0.3;
  o.timeout_s = 0.2;
  o.poll_interval_s = 0.01;
  o.on_fatal = fatal->Callback();
  return o;
}

}  // namespace

CATCH_TEST_CASE("a collective past its start-up deadline is reported with group, op and sequence number") {
  Fatal fatal;
  Watchdog watchdog(Fast(&fatal));
  auto group = watchdog.RegisterGroup("dp", {0, 2, 4, 6}, 1);
  std::vector<int> asked;
  watchdog.SetProber([&](const OpRecord& op, double budget) {
    asked = op.group->world_ranks;
    ProbeResult r;
    r.lines.push_back("rank 4: not arrived: its last dp collective is #1");
    r.absent.push_back(4);
    return r;
  });
  std::vector<int> told;
  watchdog.SetNotifier([&](const std::vector<int>& ranks, const std::string& reason) { told = ranks; });
  watchdog.Start();
  auto first = watchdog.Begin(group, "all_reduce", "float32[8], sum");
  watchdog.End(first);
  auto second = watchdog.Begin(group, "all_reduce", "float32[8], sum");
  CATCH_CHECK(second->seq == 2);
  CATCH_CHECK(second->startup);
  auto [code, report] = fatal.Get(5);
  CATCH_CHECK(code == 3);
  CATCH_CHECK(Has(report, "rank 2: collective timed out: waited 0."));
  CATCH_CHECK(
      Has(report, "all_reduce #2 (float32[8], sum) of group dp (world ranks 0,2,4,6; this rank is 1 of 4)"));
  CATCH_CHECK(Has(report, "past the 0.3 s start-up timeout (parallel.startup_timeout_s)"));
  CATCH_CHECK(Has(report, "rank 4: not arrived"));
  CATCH_CHECK(Has(report, "exiting with code 3"));
  CATCH_CHECK(asked == std::vector<int>{0, 2, 4, 6});
  CATCH_CHECK(told == std::vector<int>{4});
  CATCH_CHECK(group->completed.load() == 1);
  watchdog.Stop();
}

CATCH_TEST_CASE("after EndStartup new collectives get the regular timeout") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.startup_timeout_s = 100;
  o.timeout_s = 0.1;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("world", {0, 1, 2, 3}, 2);
  watchdog.Start();
  auto early = watchdog.Begin(group, "barrier", "");
  CATCH_CHECK(early->timeout_s == 100);
  watchdog.End(early);
  watchdog.EndStartup();
  auto late = watchdog.Begin(group, "broadcast", "int64[1] from 0");
  CATCH_CHECK(late->timeout_s == Approx(0.1));
  auto [code, report] = fatal.Get(5);
  CATCH_CHECK(code == 3);
  CATCH_CHECK(Has(report, "broadcast #2"));
  CATCH_CHECK(Has(report, "(parallel.comm_timeout_s)"));
  // No side channel: the report says so.
  CATCH_CHECK(Has(report, "which ranks had not arrived is unknown"));
  watchdog.Stop();
}

CATCH_TEST_CASE(
    "collectives that complete in time are never reported, and activity and status describe them") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.timeout_s = 5;
  o.startup_timeout_s = 5;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("tp", {2, 3}, 0);
  watchdog.Start();
  CATCH_CHECK(watchdog.DescribeActivity() == "not in a collective (none completed yet)");
  for (int i = 0; i < 20; ++i) watchdog.End(watchdog.Begin(group, "all_gather", ""));
  auto pending = watchdog.Begin(group, "all_reduce", "");
  CATCH_CHECK(Has(watchdog.DescribeActivity(), "in all_reduce #21 of tp for"));
  watchdog.End(pending);
  CATCH_CHECK(Has(watchdog.DescribeActivity(), "last completed: all_reduce #21 of tp"));
  auto status = watchdog.StatusOf("tp");
  CATCH_CHECK(status.known);
  CATCH_CHECK(status.issued == 21);
  CATCH_CHECK(status.completed == 21);
  CATCH_CHECK_FALSE(watchdog.StatusOf("pp").known);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CATCH_CHECK(fatal.calls.load() == 0);
  watchdog.Stop();
}

CATCH_TEST_CASE("asynchronous completion is polled by the watchdog thread") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.startup_timeout_s = 5;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("pp", {2, 6}, 0);
  std::atomic<bool> finished{false};
  watchdog.Start();
  auto op = watchdog.Begin(group, "send_recv", "", [&] { return finished.load(); }, {6});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CATCH_CHECK_FALSE(op->done.load());
  finished = true;
  for (int i = 0; i < 200 && !op->done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CATCH_CHECK(op->done.load());
  CATCH_CHECK(group->completed.load() == 1);
  CATCH_CHECK(fatal.calls.load() == 0);
  watchdog.Stop();
}

CATCH_TEST_CASE("a failing health check is a communication failure") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.startup_timeout_s = 5;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("dp", {0, 2}, 1);
  watchdog.AddHealthCheck([] { return absl::UnavailableError("NCCL: remote process exited"); });
  watchdog.Start();
  auto op = watchdog.Begin(group, "reduce_scatter", "bfloat16[64] -> 32, avg");
  auto [code, report] = fatal.Get(5);
  CATCH_CHECK(code == 3);
  CATCH_CHECK(Has(report, "communication failed after"));
  CATCH_CHECK(Has(report, "reduce_scatter #1"));
  CATCH_CHECK(Has(report, "NCCL: remote process exited"));
  watchdog.Stop();
}

CATCH_TEST_CASE("a failure runs every abort hook, in order, after the report and before the exit") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  std::vector<std::string> order;
  std::mutex mu;
  // The exit stand-in records when it ran relative to the hooks.
  o.on_fatal = [&](int code, const std::string& report) {
    {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back("exit");
    }
    fatal.Callback()(code, report);
  };
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("tp", {0, 2}, 1);
  for (const char* name : {"first", "second"}) {
    watchdog.AddAbortHook([&, name] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(name);
    });
  }
  watchdog.AddAbortHook([] { throw std::runtime_error("ncclCommAbort failed"); });  // does not stop the exit
  watchdog.Start();
  auto op = watchdog.Begin(group, "all_reduce", "float32[8], sum");
  auto [code, report] = fatal.Get(5);
  watchdog.Stop();
  CATCH_CHECK(code == 3);
  CATCH_CHECK(Has(report, "collective timed out"));
  std::lock_guard<std::mutex> lock(mu);
  CATCH_CHECK(order == std::vector<std::string>{"first", "second", "exit"});
}

CATCH_TEST_CASE("SIGTERM outside a collective exits with 128 + 15 when nobody else handles it") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  Watchdog watchdog(o);
  watchdog.InstallSignalHandlers();
  watchdog.Start();
  raise(SIGTERM);
  auto [code, report] = fatal.Get(5);
  CATCH_CHECK(code == 143);
  CATCH_CHECK(Has(report, "outside any collective"));
  CATCH_CHECK(Watchdog::PendingSignal() == SIGTERM);
  watchdog.Stop();
  Watchdog::ClearPendingSignalForTest();
}

CATCH_TEST_CASE("SIGUSR1 is only a flag: nothing exits") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.startup_timeout_s = 30;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("world", {0, 1, 2, 3}, 2);
  watchdog.InstallSignalHandlers();
  watchdog.Start();
  auto op = watchdog.Begin(group, "all_reduce", "");
  raise(SIGUSR1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CATCH_CHECK(Watchdog::PendingSignal() == SIGUSR1);
  CATCH_CHECK(fatal.calls.load() == 0);
  watchdog.End(op);
  watchdog.Stop();
  Watchdog::ClearPendingSignalForTest();
}

CATCH_TEST_CASE(
    "SIGTERM during a collective, while the trainer handles signals, reports it after the grace") {
  Fatal fatal;
  Watchdog::Options o = Fast(&fatal);
  o.startup_timeout_s = 30;
  o.signal_grace_s = 0.2;
  o.exit_on_signal = false;
  Watchdog watchdog(o);
  auto group = watchdog.RegisterGroup("world", {0, 1, 2, 3}, 2);
  watchdog.InstallSignalHandlers();
  watchdog.Start();
  auto op = watchdog.Begin(group, "all_reduce", "int64[1], sum");
  raise(SIGTERM);
  auto [code, report] = fatal.Get(5);
  CATCH_CHECK(code == 143);
  CATCH_CHECK(Has(report, "while waiting"));
  CATCH_CHECK(Has(report, "all_reduce #1 (int64[1], sum) of group world"));
  watchdog.Stop();
  Watchdog::ClearPendingSignalForTest();
}

namespace {

// Runs `body` in a child process with the watchdog's handlers installed over the default ones
// (not started: only the handlers are under test) and returns its exit code, or 128 + the
// signal that ended it.
int ExitCodeOfChild(const std::function<void(Watchdog&)>& body) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    for (int sig : {SIGTERM, SIGINT, SIGUSR1}) signal(sig, SIG_DFL);
    Watchdog::Options o;
    o.exit_on_signal = false;
    Watchdog watchdog(o);
    watchdog.InstallSignalHandlers();
    body(watchdog);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

CATCH_TEST_CASE("two SIGTERMs milliseconds apart are one request; another a second later exits at once") {
  // Slurm's time limit and requeue: slurmd signals the step twice, about 10 ms apart.
  CATCH_CHECK(ExitCodeOfChild([](Watchdog&) {
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
              }) == 0);
  // A user who insists, or a launcher that follows up.
  CATCH_CHECK(ExitCodeOfChild([](Watchdog&) {
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(1200));
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
              }) == 143);
  // SIGUSR1 (a save request) never counts towards it.
  CATCH_CHECK(ExitCodeOfChild([](Watchdog&) {
                raise(SIGUSR1);
                std::this_thread::sleep_for(std::chrono::milliseconds(1200));
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
              }) == 0);
}

CATCH_TEST_CASE("after a signal, Stop() leaves SIGTERM ignored so that the exit code stands") {
  // srun --kill-on-bad-exit sends SIGTERM to the other ranks as soon as one exits 75.
  CATCH_CHECK(ExitCodeOfChild([](Watchdog& watchdog) {
                raise(SIGUSR1);
                watchdog.Stop();
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                _exit(75);
              }) == 75);
  // Without a signal, Stop() gives the previous (default) handlers back.
  CATCH_CHECK(ExitCodeOfChild([](Watchdog& watchdog) {
                watchdog.Stop();
                raise(SIGTERM);
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
              }) == 143);
}
