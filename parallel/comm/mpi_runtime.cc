// MpiRuntime with MPI (see mpi_runtime.h). The side channel's messages are fixed-size structs
// sent as bytes on two private communicators: questions and exit notices on one (the watchdog
// thread keeps a receive posted there), answers on the other (received only by a rank that is
// diagnosing a failure), so that a rank asking questions never swallows answers meant for itself
// as questions.
#include "parallel/comm/mpi_runtime.h"

// Only MPI's C API: keep Open MPI's deprecated C++ bindings (and their library) out.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/logging.h"
#include "core/status_macros.h"

namespace tessera::parallel {
namespace {

constexpr uint32_t kControlMagic = 0x4c525443;  // "CTRL"
constexpr int kQueryTag = 1;
constexpr int kExitTag = 2;
constexpr int kAnswerTag = 3;
// A timed-out rank asks at most this many group members: the answer is a diagnosis, and asking
// thousands of ranks from every rank of a large group would flood the network at the worst time.
constexpr size_t kMaxProbed = 256;

struct ControlMessage {
  uint32_t magic = kControlMagic;
  int32_t from = 0;
  int64_t seq = 0;
  int64_t issued = 0;
  int64_t completed = 0;
  int32_t known = 0;
  int32_t in_flight = 0;
  char group[64] = {};
  char text[440] = {};
};

void CopyText(char* dst, size_t size, const std::string& src) {
  std::strncpy(dst, src.c_str(), size - 1);
  dst[size - 1] = '\0';
}

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, len);
}

// Messages whose requests did not complete (a dead peer) must keep their buffers; the process
// is about to exit, so they are simply never freed.
template <typename T>
T* Leak(T value) {
  return new T(std::move(value));
}

// What the probed `members` of `op` answered (answers[i] when answered[i]): the lines of the
// report, and which of them had not arrived.
void DescribeAnswers(const OpRecord& op, const std::vector<int>& members,
                     const std::vector<ControlMessage>& answers, const std::vector<bool>& answered,
                     double budget_s, ProbeResult* result) {
  const bool p2p = !op.p2p_peers.empty();
  for (size_t i = 0; i < members.size(); ++i) {
    const ControlMessage& a = answers[i];
    if (!answered[i]) {
      result->lines.push_back(absl::StrFormat(
          "rank %d: did not answer within %.1f s (dead, stopped, or unable to run its watchdog)", members[i],
          budget_s));
      result->absent.push_back(members[i]);
    } else if (p2p) {
      // No sequence numbers to compare: say what the peer is doing.
      result->lines.push_back(absl::StrFormat("rank %d: %s", members[i], a.text));
      if (!a.in_flight) result->absent.push_back(members[i]);
    } else if (!a.known) {
      result->lines.push_back(absl::StrFormat("rank %d: has no group '%s' (a different layout?); it is %s",
                                              members[i], op.group->name, a.text));
      result->absent.push_back(members[i]);
    } else if (a.issued < op.seq) {
      result->lines.push_back(
          absl::StrFormat("rank %d: not arrived: its last %s collective is #%d (#%d completed); it is %s",
                          members[i], op.group->name, a.issued, a.completed, a.text));
      result->absent.push_back(members[i]);
    }
  }
}

}  // namespace

struct MpiRuntime::Impl {
  bool initialized_here = false;
  int rank = 0;
  int size = 1;
  bool multiple = false;
  Watchdog* watchdog = nullptr;
  std::shared_ptr<GroupProgress> bootstrap;

  std::mutex control_mu;  // guards everything below
  bool attached = false;
  MPI_Comm questions = MPI_COMM_NULL;
  MPI_Comm answers = MPI_COMM_NULL;
  bool posted = false;
  MPI_Request incoming = MPI_REQUEST_NULL;
  ControlMessage incoming_buffer;
  struct PendingSend {
    MPI_Request request = MPI_REQUEST_NULL;
    ControlMessage message;
  };
  std::vector<std::unique_ptr<PendingSend>> sends;

  // Answers queued questions; returns an exit notice's text, if one arrived. control_mu held.
  std::string ServiceLocked() {
    std::string exit_notice;
    if (!attached) return exit_notice;
    for (int guard = 0; guard < 64; ++guard) {
      if (!posted) {
        if (MPI_Irecv(&incoming_buffer, sizeof(ControlMessage), MPI_BYTE, MPI_ANY_SOURCE, MPI_ANY_TAG,
                      questions, &incoming) != MPI_SUCCESS) {
          break;
        }
        posted = true;
      }
      int flag = 0;
      MPI_Status status;
      if (MPI_Test(&incoming, &flag, &status) != MPI_SUCCESS || !flag) break;
      posted = false;
      const ControlMessage message = incoming_buffer;
      if (message.magic != kControlMagic) continue;
      if (status.MPI_TAG == kQueryTag) {
        auto send = std::make_unique<PendingSend>();
        Watchdog::GroupStatus mine = watchdog->StatusOf(message.group);
        send->message.from = rank;
        send->message.seq = message.seq;
        send->message.known = mine.known;
        send->message.issued = mine.issued;
        send->message.completed = mine.completed;
        send->message.in_flight = watchdog->OldestInFlight() != nullptr;
        CopyText(send->message.group, sizeof(send->message.group), message.group);
        CopyText(send->message.text, sizeof(send->message.text), watchdog->DescribeActivity());
        if (MPI_Isend(&send->message, sizeof(ControlMessage), MPI_BYTE, status.MPI_SOURCE, kAnswerTag,
                      answers, &send->request) == MPI_SUCCESS) {
          sends.push_back(std::move(send));
        }
      } else if (status.MPI_TAG == kExitTag) {
        exit_notice = message.text;
      }
    }
    // Retire answers that went out.
    for (size_t i = 0; i < sends.size();) {
      int flag = 0;
      if (MPI_Test(&sends[i]->request, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag) {
        sends.erase(sends.begin() + i);
      } else {
        ++i;
      }
    }
    return exit_notice;
  }

  void Service() {
    std::string exit_notice;
    {
      std::lock_guard<std::mutex> lock(control_mu);
      exit_notice = ServiceLocked();
    }
    // Outside the lock: Fail() may block for good when another thread is already reporting.
    if (!exit_notice.empty()) watchdog->Fail(FailureKind::kPeerAbort, nullptr, exit_notice);
  }

  ProbeResult Probe(const OpRecord& op, double budget_s) {
    ProbeResult result;
    if (!op.group) return result;
    const bool p2p = !op.p2p_peers.empty();
    std::vector<int> members;
    for (int r : p2p ? op.p2p_peers : op.group->world_ranks) {
      if (r != rank && members.size() < kMaxProbed) members.push_back(r);
    }
    const size_t n = members.size();
    auto* questions_out = Leak(std::vector<ControlMessage>(n));
    auto* answers_in = Leak(std::vector<ControlMessage>(n));
    std::vector<MPI_Request> send_requests(n, MPI_REQUEST_NULL), recv_requests(n, MPI_REQUEST_NULL);
    std::vector<bool> answered(n, false);
    {
      std::lock_guard<std::mutex> lock(control_mu);
      if (!attached) return result;
      for (size_t i = 0; i < n; ++i) {
        ControlMessage& q = (*questions_out)[i];
        q.from = rank;
        q.seq = op.seq;
        CopyText(q.group, sizeof(q.group), op.group->name);
        MPI_Irecv(&(*answers_in)[i], sizeof(ControlMessage), MPI_BYTE, members[i], kAnswerTag, answers,
                  &recv_requests[i]);
        MPI_Isend(&q, sizeof(ControlMessage), MPI_BYTE, members[i], kQueryTag, questions, &send_requests[i]);
      }
    }
    const auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_s));
    size_t remaining = n;
    while (remaining > 0 && Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(control_mu);
        // Keep answering the others: they are asking the same questions right now.
        ServiceLocked();
        for (size_t i = 0; i < n; ++i) {
          if (answered[i]) continue;
          int flag = 0;
          if (MPI_Test(&recv_requests[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
            answered[i] = true;
            --remaining;
          }
        }
      }
      if (remaining > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    {
      std::lock_guard<std::mutex> lock(control_mu);
      for (size_t i = 0; i < n; ++i) {
        if (!answered[i] && recv_requests[i] != MPI_REQUEST_NULL) {
          MPI_Cancel(&recv_requests[i]);
          MPI_Request_free(&recv_requests[i]);
        }
        if (send_requests[i] != MPI_REQUEST_NULL) MPI_Request_free(&send_requests[i]);
      }
    }
    DescribeAnswers(op, members, *answers_in, answered, budget_s, &result);
    if (!p2p && op.group->world_ranks.size() - 1 > members.size()) {
      result.lines.push_back(absl::StrFormat("(asked only the first %d other members)", members.size()));
    }
    return result;
  }

  void Notify(const std::vector<int>& targets, const std::string& reason) {
    std::vector<MPI_Request> requests;
    {
      std::lock_guard<std::mutex> lock(control_mu);
      if (!attached) return;
      for (int target : targets) {
        ControlMessage* m = Leak(ControlMessage{});
        m->from = rank;
        CopyText(m->text, sizeof(m->text), reason);
        MPI_Request request;
        if (MPI_Isend(m, sizeof(ControlMessage), MPI_BYTE, target, kExitTag, questions, &request) ==
            MPI_SUCCESS) {
          requests.push_back(request);
        }
      }
    }
    // A moment for the notices to leave; a dead target never takes its message.
    const auto deadline = Clock::now() + std::chrono::milliseconds(300);
    while (Clock::now() < deadline) {
      int all = 0;
      {
        std::lock_guard<std::mutex> lock(control_mu);
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &all, MPI_STATUSES_IGNORE);
        ServiceLocked();
      }
      if (all) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  void Detach() {
    std::lock_guard<std::mutex> lock(control_mu);
    if (!attached) return;
    attached = false;
    if (posted) {
      MPI_Cancel(&incoming);
      MPI_Wait(&incoming, MPI_STATUS_IGNORE);
      posted = false;
    }
    // Answers still in flight go to live peers at a normal shutdown; give them a moment.
    const auto deadline = Clock::now() + std::chrono::seconds(1);
    while (!sends.empty() && Clock::now() < deadline) {
      for (size_t i = 0; i < sends.size();) {
        int flag = 0;
        if (MPI_Test(&sends[i]->request, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag) {
          sends.erase(sends.begin() + i);
        } else {
          ++i;
        }
      }
    }
    for (auto& s : sends) {
      MPI_Request_free(&s->request);
      s.release();  // its buffer may still be read by MPI
    }
    sends.clear();
    MPI_Comm_free(&questions);
    MPI_Comm_free(&answers);
  }

  // Runs a blocking MPI call under a watchdog record, so that a peer that never comes turns
  // into a report instead of a hang.
  template <typename F>
  int Guarded(const std::string& what, F&& call) {
    auto record = watchdog ? watchdog->Begin(bootstrap, what, "") : nullptr;
    int rc = call();
    if (watchdog) watchdog->End(record);
    return rc;
  }
};

MpiRuntime::MpiRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

bool MpiRuntime::Available() { return true; }

std::string MpiRuntime::LibraryVersion() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(text, &len) != MPI_SUCCESS) return "MPI (unknown version)";
  std::string version(text, len);
  return version.substr(0, version.find_first_of("\r\n"));
}

bool MpiRuntime::IsInitialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Initialize(const LaunchInfo& launch,
                                                                   Watchdog* watchdog) {
  auto impl = std::make_unique<Impl>();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("MPI was already finalized in this process");
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      return absl::UnavailableError(absl::StrCat("MPI_Init_thread failed: ", MpiErrorText(rc)));
    }
    impl->initialized_here = true;
  } else {
    MPI_Query_thread(&provided);
  }
  impl->multiple = provided >= MPI_THREAD_MULTIPLE;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &impl->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &impl->size);
  if (impl->size != launch.world_size || impl->rank != launch.rank) {
    const std::string launcher_says = launch.size_variable.empty()
                                          ? std::string("no launcher variables (a single process)")
                                          : absl::StrCat(launch.rank_variable, "=", launch.rank, " ",
                                                         launch.size_variable, "=", launch.world_size);
    return absl::FailedPreconditionError(absl::StrFormat(
        "MPI sees rank %d of %d processes but the launcher's environment says %s: MPI cannot join "
        "these processes. Launch with mpirun, or with srun --mpi=pmix (or pmi2) so that MPI is "
        "part of the step",
        impl->rank, impl->size, launcher_says));
  }
  impl->watchdog = watchdog;
  if (watchdog) {
    std::vector<int> all(impl->size);
    for (int r = 0; r < impl->size; ++r) all[r] = r;
    impl->bootstrap = watchdog->RegisterGroup("mpi-bootstrap", all, impl->rank);
  }
  // The side channel: private duplicates, so no message of ours can match a user's receive.
  int rc = impl->Guarded("MPI_Comm_dup", [&] { return MPI_Comm_dup(MPI_COMM_WORLD, &impl->questions); });
  if (rc == MPI_SUCCESS) {
    rc = impl->Guarded("MPI_Comm_dup", [&] { return MPI_Comm_dup(MPI_COMM_WORLD, &impl->answers); });
  }
  if (rc != MPI_SUCCESS) return absl::UnavailableError(absl::StrCat("MPI_Comm_dup: ", MpiErrorText(rc)));
  Impl* raw = impl.get();
  if (watchdog && impl->multiple) {
    impl->attached = true;
    watchdog->SetTickHook([raw] { raw->Service(); });
    watchdog->SetProber([raw](const OpRecord& op, double budget) { return raw->Probe(op, budget); });
    watchdog->SetNotifier(
        [raw](const std::vector<int>& targets, const std::string& reason) { raw->Notify(targets, reason); });
  } else if (watchdog) {
    TS_LOG(WARNING) << "MPI granted thread level " << provided
                    << ", not MPI_THREAD_MULTIPLE: a timed-out collective cannot tell which ranks "
                       "had not arrived";
  }
  return std::unique_ptr<MpiRuntime>(new MpiRuntime(std::move(impl)));
}

MpiRuntime::~MpiRuntime() {
  if (impl_->watchdog) {
    // The watchdog thread must not enter MPI once the channel is gone.
    impl_->watchdog->SetTickHook(nullptr);
    impl_->watchdog->SetProber(nullptr);
    impl_->watchdog->SetNotifier(nullptr);
  }
  impl_->Detach();
  if (impl_->questions != MPI_COMM_NULL) MPI_Comm_free(&impl_->questions);
  if (impl_->answers != MPI_COMM_NULL) MPI_Comm_free(&impl_->answers);
  if (impl_->initialized_here) impl_->Guarded("MPI_Finalize", [] { return MPI_Finalize(); });
}

int MpiRuntime::rank() const { return impl_->rank; }
int MpiRuntime::size() const { return impl_->size; }
bool MpiRuntime::thread_multiple() const { return impl_->multiple; }

absl::Status MpiRuntime::FillNodeLayout(LaunchInfo* launch) {
  MPI_Comm node = MPI_COMM_NULL, leaders = MPI_COMM_NULL;
  int rc = impl_->Guarded("MPI_Comm_split_type", [&] {
    return MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, impl_->rank, MPI_INFO_NULL, &node);
  });
  if (rc != MPI_SUCCESS)
    return absl::UnavailableError(absl::StrCat("MPI_Comm_split_type: ", MpiErrorText(rc)));
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  rc = impl_->Guarded("MPI_Comm_split", [&] {
    return MPI_Comm_split(MPI_COMM_WORLD, local_rank == 0 ? 0 : MPI_UNDEFINED, impl_->rank, &leaders);
  });
  if (rc != MPI_SUCCESS) return absl::UnavailableError(absl::StrCat("MPI_Comm_split: ", MpiErrorText(rc)));
  int layout[2] = {0, 1};  // node index, node count
  if (leaders != MPI_COMM_NULL) {
    MPI_Comm_rank(leaders, &layout[0]);
    MPI_Comm_size(leaders, &layout[1]);
    MPI_Comm_free(&leaders);
  }
  rc = impl_->Guarded("MPI_Bcast", [&] { return MPI_Bcast(layout, 2, MPI_INT, 0, node); });
  MPI_Comm_free(&node);
  if (rc != MPI_SUCCESS) return absl::UnavailableError(absl::StrCat("MPI_Bcast: ", MpiErrorText(rc)));
  if (launch->local_rank < 0) launch->local_rank = local_rank;
  if (launch->local_size < 0) launch->local_size = local_size;
  if (launch->node_rank < 0) launch->node_rank = layout[0];
  if (launch->num_nodes < 0) launch->num_nodes = layout[1];
  return absl::OkStatus();
}

absl::Status MpiRuntime::BroadcastFromRoot(std::string* bytes) {
  constexpr int kMax = 1 << 16;
  if (impl_->rank == 0 && bytes->size() > kMax) {
    return absl::InvalidArgumentError("BroadcastFromRoot: more than 64 KiB");
  }
  int length = static_cast<int>(bytes->size());
  int rc = impl_->Guarded("MPI_Bcast", [&] { return MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD); });
  if (rc == MPI_SUCCESS) {
    bytes->resize(length);
    rc = impl_->Guarded("MPI_Bcast",
                        [&] { return MPI_Bcast(bytes->data(), length, MPI_BYTE, 0, MPI_COMM_WORLD); });
  }
  if (rc != MPI_SUCCESS) return absl::UnavailableError(absl::StrCat("MPI_Bcast: ", MpiErrorText(rc)));
  return absl::OkStatus();
}

}  // namespace tessera::parallel
