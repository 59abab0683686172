// The watchdog of watchdog.h: a thread that wakes every poll interval, and the one-shot failure
// report that ends the process. The signal handlers only set atomics (async-signal-safe); the
// thread does the printing.
#include "parallel/comm/watchdog.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/logging.h"

namespace tessera::parallel {
namespace {

// Slurm delivers one stop request as two SIGTERMs a few milliseconds apart (at a time limit, a
// requeue or a cancel, slurmd signals each step once for the event and once to terminate it): a
// repeat within this window is the same request, not a user insisting.
constexpr int64_t kRepeatWindowNs = 1'000'000'000;

// Written by the signal handler, read by the watchdog thread.
std::atomic<int> g_pending_signal{0};
std::atomic<int64_t> g_first_stop_ns{0};  // CLOCK_MONOTONIC of the first SIGTERM/SIGINT; 0: none
struct sigaction g_previous_term, g_previous_int, g_previous_usr1;
std::atomic<bool> g_handlers_owned{false};

int64_t MonotonicNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

void OnSignal(int sig) {
  // SIGUSR1 asks for a save; it never replaces a pending request to stop.
  if (sig == SIGUSR1 && g_pending_signal.load() != 0) return;
  g_pending_signal.store(sig);
  if (sig == SIGUSR1) return;
  // A second SIGTERM or SIGINT, past the repeat window, means the user (or launcher) insists:
  // leave at once.
  const int64_t now = std::max<int64_t>(MonotonicNs(), 1);
  int64_t first = 0;
  if (g_first_stop_ns.compare_exchange_strong(first, now)) return;
  if (now - first > kRepeatWindowNs) _exit(128 + sig);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string RankList(const std::vector<int>& ranks) {
  constexpr size_t kShown = 16;  // a 1024-rank group would drown the message
  std::vector<int> shown(ranks.begin(), ranks.begin() + std::min(ranks.size(), kShown));
  std::string out = absl::StrJoin(shown, ",");
  if (ranks.size() > kShown) absl::StrAppend(&out, ",... (", ranks.size(), " ranks)");
  return out;
}

}  // namespace

std::string GroupProgress::Describe() const {
  return absl::StrCat(name, " (world ranks ", RankList(world_ranks), "; this rank is ", rank, " of ",
                      world_ranks.size(), ")");
}

std::string OpRecord::Describe() const {
  std::string out = absl::StrCat(op, " #", seq);
  if (!detail.empty()) absl::StrAppend(&out, " (", detail, ")");
  if (group) absl::StrAppend(&out, " of group ", group->Describe());
  return out;
}

Watchdog::Watchdog(Options options) : options_(std::move(options)) {}

Watchdog::~Watchdog() { Stop(); }

void Watchdog::SetProber(Prober prober) {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  prober_ = std::move(prober);
}
void Watchdog::SetNotifier(Notifier notifier) {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  notifier_ = std::move(notifier);
}
void Watchdog::SetTickHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  tick_hook_ = std::move(hook);
}
void Watchdog::AddHealthCheck(std::function<absl::Status()> check) {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  health_checks_.push_back(std::move(check));
}
void Watchdog::AddAbortHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(hooks_mu_);
  abort_hooks_.push_back(std::move(hook));
}
void Watchdog::ClearHooks() {
  std::lock_guard<std::mutex> tick(tick_mu_);
  std::lock_guard<std::mutex> lock(hooks_mu_);
  prober_ = nullptr;
  notifier_ = nullptr;
  tick_hook_ = nullptr;
  health_checks_.clear();
  abort_hooks_.clear();
}

void Watchdog::Start() {
  std::lock_guard<std::mutex> lock(thread_mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Watchdog::Stop() {
  {
    std::lock_guard<std::mutex> lock(thread_mu_);
    stop_ = true;
  }
  thread_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (handlers_installed_ && g_pending_signal.load() != 0) {
    // The process is on its way out because of a signal (a trainer that saved and exits 75). A
    // launcher's follow-up SIGTERM (srun --kill-on-bad-exit, mpirun, once the first rank has
    // exited 75) must not turn that exit into a death by signal: ignore them from here on.
    struct sigaction ignore;
    std::memset(&ignore, 0, sizeof(ignore));
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGTERM, &ignore, nullptr);
    sigaction(SIGINT, &ignore, nullptr);
    sigaction(SIGUSR1, &ignore, nullptr);
    g_handlers_owned.store(false);
    handlers_installed_ = false;
  } else if (handlers_installed_) {
    sigaction(SIGTERM, &g_previous_term, nullptr);
    sigaction(SIGINT, &g_previous_int, nullptr);
    sigaction(SIGUSR1, &g_previous_usr1, nullptr);
    g_handlers_owned.store(false);
    handlers_installed_ = false;
  }
}

void Watchdog::InstallSignalHandlers() {
  if (handlers_installed_ || g_handlers_owned.exchange(true)) return;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGUSR1, &action, &g_previous_usr1);
  handlers_installed_ = true;
}

int Watchdog::PendingSignal() { return g_pending_signal.load(); }

void Watchdog::ClearPendingSignalForTest() {
  g_pending_signal.store(0);
  g_first_stop_ns.store(0);
}

std::shared_ptr<GroupProgress> Watchdog::RegisterGroup(const std::string& name, std::vector<int> world_ranks,
                                                       int rank) {
  auto group = std::make_shared<GroupProgress>();
  group->name = name;
  group->world_ranks = std::move(world_ranks);
  group->rank = rank;
  std::lock_guard<std::mutex> lock(mu_);
  PruneLocked();
  groups_.push_back(group);
  return group;
}

void Watchdog::PruneLocked() {
  groups_.erase(std::remove_if(groups_.begin(), groups_.end(),
                               [](const std::weak_ptr<GroupProgress>& g) { return g.expired(); }),
                groups_.end());
}

double Watchdog::current_timeout_s() const {
  return in_startup_.load() ? options_.startup_timeout_s : options_.timeout_s;
}

void Watchdog::EndStartup() { in_startup_.store(false); }

std::shared_ptr<OpRecord> Watchdog::Begin(const std::shared_ptr<GroupProgress>& group, std::string op,
                                          std::string detail, std::function<bool()> poll,
                                          std::vector<int> p2p_peers) {
  auto record = std::make_shared<OpRecord>();
  record->group = group;
  record->op = std::move(op);
  record->detail = std::move(detail);
  record->seq = group ? group->issued.fetch_add(1) + 1 : 0;
  record->startup = in_startup_.load();
  record->timeout_s = record->startup ? options_.startup_timeout_s : options_.timeout_s;
  record->start = Clock::now();
  record->deadline = record->start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(record->timeout_s));
  record->poll = std::move(poll);
  record->p2p_peers = std::move(p2p_peers);
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.push_back(record);
  return record;
}

void Watchdog::End(const std::shared_ptr<OpRecord>& op) {
  if (!op || op->done.exchange(true)) return;
  if (op->group) {
    int64_t prev = op->group->completed.load();
    while (prev < op->seq && !op->group->completed.compare_exchange_weak(prev, op->seq)) {
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), op), in_flight_.end());
  last_done_ = absl::StrCat(op->op, " #", op->seq, op->group ? " of " + op->group->name : "");
  last_done_time_ = Clock::now();
}

std::shared_ptr<OpRecord> Watchdog::OldestInFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<OpRecord> oldest;
  for (const auto& op : in_flight_) {
    if (!op->done.load() && (!oldest || op->start < oldest->start)) oldest = op;
  }
  return oldest;
}

std::vector<std::shared_ptr<OpRecord>> Watchdog::InFlight() const {
  std::vector<std::shared_ptr<OpRecord>> ops;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& op : in_flight_) {
      if (!op->done.load()) ops.push_back(op);
    }
  }
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a->start < b->start; });
  return ops;
}

Watchdog::GroupStatus Watchdog::StatusOf(const std::string& group) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& weak : groups_) {
    if (auto g = weak.lock(); g && g->name == group) {
      return GroupStatus{true, g->issued.load(), g->completed.load()};
    }
  }
  return GroupStatus{};
}

std::string Watchdog::DescribeActivity() const {
  const auto now = Clock::now();
  if (auto op = OldestInFlight()) {
    return absl::StrFormat("in %s #%d of %s for %.1f s", op->op, op->seq, op->group ? op->group->name : "-",
                           Seconds(now - op->start));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (last_done_.empty()) return "not in a collective (none completed yet)";
  return absl::StrFormat("not in a collective (last completed: %s, %.1f s ago)", last_done_,
                         Seconds(now - last_done_time_));
}

void Watchdog::Loop() {
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.poll_interval_s));
  std::unique_lock<std::mutex> lock(thread_mu_);
  while (!stop_) {
    thread_cv_.wait_for(lock, interval, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    Tick();
    lock.lock();
  }
}

void Watchdog::Tick() {
  std::lock_guard<std::mutex> tick(tick_mu_);
  if (failing_.load()) return;
  std::function<void()> hook;
  std::vector<std::function<absl::Status()>> checks;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    hook = tick_hook_;
    checks = health_checks_;
  }
  if (hook) hook();

  std::vector<std::shared_ptr<OpRecord>> ops;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ops = in_flight_;
  }
  for (const auto& op : ops) {
    if (!op->done.load() && op->poll && op->poll()) End(op);
  }
  const auto now = Clock::now();
  for (const auto& op : ops) {
    if (!op->done.load() && now > op->deadline) {
      Fail(FailureKind::kTimeout, op.get(), "");
      return;
    }
  }
  for (const auto& check : checks) {
    absl::Status status = check();
    if (!status.ok()) {
      auto oldest = OldestInFlight();
      Fail(FailureKind::kBackendError, oldest.get(), std::string(status.message()));
      return;
    }
  }
  if (const int sig = PendingSignal(); sig != 0) {
    if (signal_seen_ == Clock::time_point{}) {
      signal_seen_ = now;
      TS_LOG(WARNING) << "rank " << options_.world_rank << ": received " << strsignal(sig) << " ("
                      << DescribeActivity() << ")";
    }
    if (sig == SIGUSR1) return;  // a save request: the trainer acts on it
    auto oldest = OldestInFlight();
    if (options_.exit_on_signal) {
      // The launcher is ending the job (often because a peer died): say what this rank was
      // waiting in before its SIGKILL comes.
      Fail(FailureKind::kSignal, oldest.get(), "");
    } else if (oldest && now - std::max(signal_seen_, oldest->start) >=
                             std::chrono::duration<double>(options_.signal_grace_s)) {
      // The trainer could not reach a step boundary: this collective is stuck.
      Fail(FailureKind::kSignal, oldest.get(), "");
    }
  }
}

void Watchdog::Fail(FailureKind kind, const OpRecord* op, const std::string& what) {
  if (failing_.exchange(true)) {
    if (options_.on_fatal) return;
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the first reporter exits
  }
  const int sig = PendingSignal();
  const int code = kind == FailureKind::kSignal && sig != 0 ? 128 + sig : options_.exit_code;
  std::string report;
  const std::function<void(const std::string&)> emit = [&report](const std::string& line) {
    TS_LOG(ERROR) << line;
    absl::StrAppend(&report, line, "\n");
  };
  const std::string me = absl::StrCat("rank ", options_.world_rank);
  const double waited = op ? Seconds(Clock::now() - op->start) : 0;
  emit(FailureHeadline(kind, op, what, sig, waited));
  if (kind == FailureKind::kLocalError && options_.world_size > 1) NotifyPeersOfLocalError(what);
  if (op && kind != FailureKind::kPeerAbort && kind != FailureKind::kLocalError) {
    ReportAbsentRanks(kind, *op, waited, emit);
  }
  emit(absl::StrFormat("%s: exiting with code %d", me, code));
  RunAbortHooks();
  if (options_.on_fatal) {
    options_.on_fatal(code, report);
    return;
  }
  std::fflush(nullptr);
  _exit(code);
}

void Watchdog::RunAbortHooks() {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    hooks = abort_hooks_;
  }
  for (const std::function<void()>& hook : hooks) {
    try {
      hook();
    } catch (const std::exception& e) {
      TS_LOG(ERROR) << "rank " << options_.world_rank << ": while aborting communication: " << e.what();
    }
  }
}

std::string Watchdog::FailureHeadline(FailureKind kind, const OpRecord* op, const std::string& what, int sig,
                                      double waited) const {
  const std::string me = absl::StrCat("rank ", options_.world_rank);
  switch (kind) {
    case FailureKind::kTimeout:
      return absl::StrFormat("%s: collective timed out: waited %.1f s in %s, past the %g s %s (%s)", me,
                             waited, op->Describe(), op->timeout_s,
                             op->startup ? "start-up timeout" : "timeout",
                             op->startup ? "parallel.startup_timeout_s" : "parallel.comm_timeout_s");
    case FailureKind::kBackendError:
      return op ? absl::StrFormat("%s: communication failed after %.1f s in %s: %s", me, waited,
                                  op->Describe(), what)
                : absl::StrFormat("%s: communication failed (%s): %s", me, DescribeActivity(), what);
    case FailureKind::kSignal:
      return op ? absl::StrFormat(
                      "%s: received %s while waiting %.1f s in %s: the launcher is stopping the job, "
                      "usually because another rank exited (see the launcher's message)",
                      me, strsignal(sig), waited, op->Describe())
                : absl::StrFormat("%s: received %s outside any collective (%s); exiting", me, strsignal(sig),
                                  DescribeActivity());
    case FailureKind::kPeerAbort:
      return absl::StrFormat("%s: told to exit by a peer: %s; this rank was %s", me, what,
                             DescribeActivity());
    case FailureKind::kLocalError:
      return absl::StrFormat("%s: fatal error: %s; ending the job", me, what);
  }
  return absl::StrFormat("%s: failure", me);
}

// Tells every other rank to exit, so that none waits for this one until its timeout.
void Watchdog::NotifyPeersOfLocalError(const std::string& what) {
  Notifier notifier;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    notifier = notifier_;
  }
  std::vector<int> others;
  for (int r = 0; r < options_.world_size; ++r) {
    if (r != options_.world_rank) others.push_back(r);
  }
  if (notifier) notifier(others, absl::StrCat("rank ", options_.world_rank, " failed: ", what));
}

// Asks the ranks of the stuck collective (over the backend's side channel) which had not
// arrived, reports them, and tells them why this rank gives up.
void Watchdog::ReportAbsentRanks(FailureKind kind, const OpRecord& op, double waited,
                                 const std::function<void(const std::string&)>& emit) {
  const std::string me = absl::StrCat("rank ", options_.world_rank);
  Prober prober;
  Notifier notifier;
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    prober = prober_;
    notifier = notifier_;
  }
  const double budget =
      kind == FailureKind::kSignal ? std::min(0.5, options_.probe_budget_s) : options_.probe_budget_s;
  if (op.p2p_peers.empty() && op.group && op.group->world_ranks.size() <= 1) return;  // nobody to wait for
  if (!prober) {
    emit(absl::StrCat(me,
                      ": which ranks had not arrived is unknown (this backend has no side "
                      "channel to ask them)"));
    return;
  }
  ProbeResult result = prober(op, budget);
  if (!op.p2p_peers.empty()) {
    emit(absl::StrCat(me, ": the peers of this send/recv:"));
    for (const std::string& line : result.lines) emit(absl::StrCat(me, ":   ", line));
  } else if (result.lines.empty()) {
    emit(
        absl::StrFormat("%s: every other rank of group %s answered and had arrived at #%d: "
                        "the collective itself is stuck (network, or a stopped process)",
                        me, op.group ? op.group->name : "-", op.seq));
  } else {
    emit(absl::StrFormat("%s: ranks of group %s that had not arrived at %s #%d:", me,
                         op.group ? op.group->name : "-", op.op, op.seq));
    for (const std::string& line : result.lines) emit(absl::StrCat(me, ":   ", line));
  }
  if (notifier && !result.absent.empty()) {
    notifier(result.absent,
             absl::StrFormat("rank %d waited %.1f s for it in %s #%d of group %s", options_.world_rank,
                             waited, op.op, op.seq, op.group ? op.group->name : "-"));
  }
}

}  // namespace tessera::parallel
