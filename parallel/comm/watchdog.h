// The watchdog that turns a hung or failed collective into a diagnosis and an exit on every
// rank, never a silent hang. Every collective is recorded here with its group, operation,
// sequence number and deadline; a thread checks the deadlines (and, for backends that complete
// asynchronously, polls completion), runs the backends' health checks, and notices SIGTERM,
// SIGINT and SIGUSR1. On a failure it prints what this rank was waiting in, asks the group's other ranks how
// far they got (through a backend's side channel, where one exists: MPI), tells the ranks that had
// not arrived to exit, and exits with a non-zero code.
//
// The deadline of a collective is fixed when it is issued: the start-up timeout until
// EndStartup() (the trainer calls it after the first step), the regular timeout after.
//
// No LibTorch and no MPI here: backends plug in through the Prober, Notifier and tick hooks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace tessera::parallel {

using Clock = std::chrono::steady_clock;

// The progress of one communicator on this rank; peers ask about it by name.
struct GroupProgress {
  std::string name;                   // "world", "tp", "dp", ...: unique within a process
  std::vector<int> world_ranks;       // the members' world ranks, in group-rank order
  int rank = 0;                       // this process's rank within the group
  std::atomic<int64_t> issued{0};     // sequence number of the last collective started (1, 2, ...)
  std::atomic<int64_t> completed{0};  // sequence number of the last collective finished

  // "dp (world ranks 0,2,4,6; this rank is 1 of 4)"; long member lists are abbreviated.
  std::string Describe() const;
};

// One collective (or start-up step) in flight.
struct OpRecord {
  std::shared_ptr<GroupProgress> group;
  std::string op;      // "all_reduce"
  std::string detail;  // "bfloat16[1024], sum"
  int64_t seq = 0;
  Clock::time_point start;
  Clock::time_point deadline;
  double timeout_s = 0;
  bool startup = false;  // the deadline came from the start-up timeout
  // Optional, for backends that complete without the host waiting (NCCL): returns true once the
  // operation finished. Called from the watchdog thread only.
  std::function<bool()> poll;
  // For send/recv: the peers' world ranks. Their progress is not counted per group, so a
  // timeout asks these peers what they are doing instead of comparing sequence numbers.
  std::vector<int> p2p_peers;
  std::atomic<bool> done{false};

  // "all_reduce #17 (float32[4096], sum) of group dp (world ranks ...)".
  std::string Describe() const;
};

enum class FailureKind {
  kTimeout,       // a collective passed its deadline
  kBackendError,  // the backend reported an error (a peer's connection broke, NCCL async error)
  kSignal,        // SIGTERM/SIGINT arrived while a collective did not finish
  kPeerAbort,     // another rank diagnosed a failure and told this one to exit
  kLocalError,    // this rank cannot go on (ProcessGrid::Abort): the others are told to exit
};

// What the side channel learnt from the group's other members.
struct ProbeResult {
  std::vector<std::string> lines;  // one per member that had not arrived or did not answer
  std::vector<int> absent;         // world ranks to tell to exit (not arrived or silent)
};

class Watchdog {
 public:
  struct Options {
    int world_rank = 0;
    int world_size = 1;
    double startup_timeout_s = 900;
    double timeout_s = 300;
    double poll_interval_s = 0.05;
    // Time to wait for peers' answers on a timeout (half a second on a signal, since the
    // launcher follows SIGTERM with SIGKILL about a second later).
    double probe_budget_s = 2.0;
    // SIGTERM/SIGINT with exit_on_signal: report the collective in flight (if any) and exit at
    // once (mpirun's SIGKILL follows its SIGTERM by about a second). Without exit_on_signal the
    // trainer saves at its next step boundary; a collective still unfinished signal_grace_s
    // after the signal is then reported and ends the process. SIGUSR1 (Slurm's --signal save
    // request) only sets the flag.
    double signal_grace_s = 10;
    bool exit_on_signal = true;
    int exit_code = 3;
    // Tests: called instead of _exit with the exit code and the report.
    std::function<void(int code, const std::string& report)> on_fatal;
  };
  using Prober = std::function<ProbeResult(const OpRecord& op, double budget_s)>;
  using Notifier = std::function<void(const std::vector<int>& world_ranks, const std::string& reason)>;

  explicit Watchdog(Options options);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Backend hooks. Setting one (to null, say) waits for a tick in progress to finish, so a
  // backend may free what its hooks use right after removing them.
  void SetProber(Prober prober);
  void SetNotifier(Notifier notifier);
  // Called on every tick of the watchdog thread (the MPI side channel answers peers there).
  void SetTickHook(std::function<void()> hook);
  // Checked on every tick; an error is a fatal communication failure.
  void AddHealthCheck(std::function<absl::Status()> check);
  // Called by Fail, in the order added, after the report and before the exit: each ends what
  // would keep this rank's device busy once the process is gone (an NCCL communicator's
  // ncclCommAbort, so that no kernel of this rank is left waiting for peers inside a collective).
  void AddAbortHook(std::function<void()> hook);
  void ClearHooks();

  void Start();
  void Stop();

  std::shared_ptr<GroupProgress> RegisterGroup(const std::string& name, std::vector<int> world_ranks,
                                               int rank);
  // Records the start of the next collective of `group` (its sequence number is issued + 1).
  std::shared_ptr<OpRecord> Begin(const std::shared_ptr<GroupProgress>& group, std::string op,
                                  std::string detail, std::function<bool()> poll = nullptr,
                                  std::vector<int> p2p_peers = {});
  // Records its completion (idempotent).
  void End(const std::shared_ptr<OpRecord>& op);

  // Switches collectives issued from now on to the regular timeout.
  void EndStartup();
  bool in_startup() const { return in_startup_.load(); }
  double current_timeout_s() const;

  // Reports a fatal failure and exits (or calls on_fatal). Thread-safe; only the first call
  // reports: a second caller blocks until the process exits (or returns, under on_fatal).
  void Fail(FailureKind kind, const OpRecord* op, const std::string& what);
  bool failed() const { return failing_.load(); }

  // What this rank has done in `group`, for a peer's question.
  struct GroupStatus {
    bool known = false;
    int64_t issued = 0;
    int64_t completed = 0;
  };
  GroupStatus StatusOf(const std::string& group) const;
  // "in all_reduce #17 of dp for 3.2 s" or "not in a collective (last: ... 3.1 s ago)".
  std::string DescribeActivity() const;

  // SIGTERM, SIGINT and SIGUSR1 set a flag that the watchdog thread acts on (see Options); a
  // second SIGTERM or SIGINT more than a second after the first exits at once (one within the
  // second is the same request: Slurm sends its SIGTERM twice, milliseconds apart).
  // Process-wide: one watchdog at a time installs them; Stop() restores the previous handlers,
  // except after a signal: the process is then leaving because of it, and SIGTERM, SIGINT and
  // SIGUSR1 stay ignored so that its exit code (75 after a save) stands.
  void InstallSignalHandlers();
  // The last signal received (SIGTERM, SIGINT, SIGUSR1), or 0.
  static int PendingSignal();
  // Tests only: forgets a received signal.
  static void ClearPendingSignalForTest();

  // The in-flight record that has waited longest, or null.
  std::shared_ptr<OpRecord> OldestInFlight() const;
  // Every record in flight, oldest first.
  std::vector<std::shared_ptr<OpRecord>> InFlight() const;

 private:
  void Loop();
  void Tick();
  void PruneLocked();
  // Steps of Fail: its first line, the notice to peers of a local error, the probe of who had not
  // arrived at the collective `op`, and the abort hooks.
  std::string FailureHeadline(FailureKind kind, const OpRecord* op, const std::string& what, int sig,
                              double waited) const;
  void NotifyPeersOfLocalError(const std::string& what);
  void RunAbortHooks();
  void ReportAbsentRanks(FailureKind kind, const OpRecord& op, double waited,
                         const std::function<void(const std::string&)>& emit);

  Options options_;
  std::atomic<bool> in_startup_{true};
  std::atomic<bool> failing_{false};

  mutable std::mutex mu_;
  std::vector<std::weak_ptr<GroupProgress>> groups_;
  std::vector<std::shared_ptr<OpRecord>> in_flight_;
  // The last completed op, for DescribeActivity().
  std::string last_done_;
  Clock::time_point last_done_time_;

  // Held for a whole tick, and taken by the hook setters, so that a backend that removes its
  // hooks knows no tick is still running them.
  std::mutex tick_mu_;
  std::mutex hooks_mu_;
  Prober prober_;
  Notifier notifier_;
  std::function<void()> tick_hook_;
  std::vector<std::function<absl::Status()>> health_checks_;
  std::vector<std::function<void()>> abort_hooks_;

  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool stop_ = false;
  std::thread thread_;
  bool handlers_installed_ = false;
  Clock::time_point signal_seen_{};
};

}  // namespace tessera::parallel
