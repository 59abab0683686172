// The communicator interface the parallel layers use: all-reduce (sum, average, max),
// reduce-scatter, all-gather, broadcast, batched send/recv and barrier on contiguous at::Tensors of
// float32, bfloat16, float16, float64, int32 and int64. Every operation is asynchronous where the
// backend allows and returns a Work handle whose deadline the watchdog enforces; the blocking
// forms are the asynchronous ones plus Wait().
//
// Backends (chosen by ProcessGrid from what the build found; callers never name one):
//   local  one process: every collective is the identity (any device)
//   mpi    CPU tensors over MPI's nonblocking collectives
//   nccl   CUDA tensors over NCCL on the communicator's own stream, ordered against the caller's
//          current stream with events
//
// THE CONTRACT: every collective (and Split) must be called by all ranks of the group, in the
// same order, with tensors of the same dtype and the sizes stated. A rank that breaks it leaves
// the others waiting; the watchdog then reports the operation and its sequence number on every
// rank and ends the job. Send/recv involve only the two ranks named, which must post matching
// operations (same size and dtype) in the same order. A communicator is used by one thread at a
// time (the watchdog's thread only reads its progress counters).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/comm/watchdog.h"

namespace tessera::parallel {

enum class ReduceOp { kSum, kAvg, kMax };
const char* ReduceOpName(ReduceOp op);

enum class Backend { kLocal, kMpi, kNccl };
const char* BackendName(Backend backend);

// Whether a communicator's backend supports this dtype (the six above, on every backend).
bool IsSupportedDtype(at::ScalarType dtype);

// A pending operation. Destroying a Work that was not waited for waits for it (MPI) or leaves it
// ordered on its stream (NCCL), so buffers are never released while a backend writes them.
class Work {
 public:
  virtual ~Work();
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Completes the operation. CPU backends: blocks until the result is in the output tensors.
  // NCCL: makes the caller's current CUDA stream wait for it (the host does not block), like any
  // other CUDA work. A collective past its deadline never returns here: the watchdog reports it
  // on every rank and ends the process. Idempotent.
  absl::Status Wait();
  // True once the operation completed (never blocks; NCCL: on the device).
  bool IsCompleted();

  // Group, operation, sequence number and deadline (for logs).
  const OpRecord& record() const { return *record_; }
  Clock::time_point deadline() const { return record_->deadline; }

 protected:
  Work(Watchdog* watchdog, std::shared_ptr<OpRecord> record)
      : watchdog_(watchdog), record_(std::move(record)) {}
  // Blocks (CPU) or orders the current stream (NCCL); then runs any post-processing.
  virtual absl::Status WaitImpl() = 0;
  virtual bool TestImpl() = 0;
  // Whether the watchdog thread learns of completion by polling (NCCL) rather than from Wait().
  virtual bool completes_asynchronously() const { return false; }
  bool waited() const { return waited_; }

  Watchdog* watchdog_;
  std::shared_ptr<OpRecord> record_;

 private:
  bool waited_ = false;
  absl::Status status_;
};

// One operation of a batched send/recv. `peer` is a rank of the communicator's group.
struct P2POp {
  enum class Kind { kSend, kRecv };
  Kind kind;
  at::Tensor tensor;
  int peer;
};

class Communicator {
 public:
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // "world", "tp", "pp", "dp", "model", "embedding" or a name given to Split.
  const std::string& name() const { return progress_->name; }
  int rank() const { return progress_->rank; }
  int size() const { return static_cast<int>(progress_->world_ranks.size()); }
  // The world ranks of the members, in group-rank order.
  const std::vector<int>& world_ranks() const { return progress_->world_ranks; }
  virtual Backend backend() const = 0;
  // The device this communicator's tensors must live on (CPU for MPI; any for local).
  virtual std::string device_description() const = 0;

  // --- asynchronous forms; Wait() on the returned handle before touching the tensors ---

  // In place: `tensor` becomes the reduction over the group. kAvg divides the sum by size()
  // (integers: truncating toward zero). All ranks of the group must call it in the same order,
  // with the same dtype and numel.
  absl::StatusOr<std::unique_ptr<Work>> AllReduceAsync(const at::Tensor& tensor, ReduceOp op);
  // `input` holds size() equal blocks; group rank r receives the reduction of block r in
  // `output` (input.numel() == size() * output.numel()). All ranks of the group must call it in
  // the same order, with the same dtype and sizes.
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterAsync(const at::Tensor& output, const at::Tensor& input,
                                                           ReduceOp op);
  // `output` receives every rank's `input`, rank-major (output.numel() == size() *
  // input.numel()). All ranks of the group must call it in the same order, with the same dtype
  // and sizes.
  absl::StatusOr<std::unique_ptr<Work>> AllGatherAsync(const at::Tensor& output, const at::Tensor& input);
  // Group rank `root`'s `tensor` is copied into every rank's `tensor`. All ranks of the group
  // must call it in the same order, with the same root, dtype and numel.
  absl::StatusOr<std::unique_ptr<Work>> BroadcastAsync(const at::Tensor& tensor, int root);
  // Posts all sends and receives together (so a ring exchange cannot deadlock) and completes
  // them as one. Each peer must post the matching operations (same sizes and dtypes) in the same
  // order; only the ranks named take part.
  absl::StatusOr<std::unique_ptr<Work>> SendRecvAsync(std::vector<P2POp> ops);
  // Completes once every rank of the group has called it. All ranks of the group must call it
  // in the same order.
  absl::StatusOr<std::unique_ptr<Work>> BarrierAsync();

  // --- blocking forms: the asynchronous form, then Wait(); same contract ---
  absl::Status AllReduce(const at::Tensor& tensor, ReduceOp op);
  absl::Status ReduceScatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op);
  absl::Status AllGather(const at::Tensor& output, const at::Tensor& input);
  absl::Status Broadcast(const at::Tensor& tensor, int root);
  absl::Status SendRecv(std::vector<P2POp> ops);
  absl::Status Send(const at::Tensor& tensor, int peer);
  absl::Status Recv(const at::Tensor& tensor, int peer);
  absl::Status Barrier();

  // Splits the group: the ranks passing the same color >= 0 form one new communicator, ordered
  // by key (ties by rank); a negative color gets nullptr. All ranks of the group must call it in
  // the same order as the collectives. `name` must be unique within the process.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key, const std::string& name);

 protected:
  Communicator(Watchdog* watchdog, const std::string& name, std::vector<int> world_ranks, int rank);

  // An operation, validated, with its description for the watchdog ("float32[4096], sum").
  struct OpDesc {
    OpDesc(std::string op_name, std::string op_detail, std::vector<int> peers = {})
        : op(std::move(op_name)), detail(std::move(op_detail)), p2p_peers(std::move(peers)) {}
    std::string op;
    std::string detail;
    // For send/recv: the peers' world ranks (their progress is asked of them only).
    std::vector<int> p2p_peers;
  };
  // Backends call this right before launching: it takes the next sequence number. `poll` is for
  // backends that complete asynchronously (see OpRecord::poll).
  std::shared_ptr<OpRecord> BeginOp(const OpDesc& desc, std::function<bool()> poll = nullptr);

  virtual absl::StatusOr<std::unique_ptr<Work>> DoAllReduce(const OpDesc& desc, const at::Tensor& tensor,
                                                            ReduceOp op) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> DoReduceScatter(const OpDesc& desc, const at::Tensor& output,
                                                                const at::Tensor& input, ReduceOp op) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> DoAllGather(const OpDesc& desc, const at::Tensor& output,
                                                            const at::Tensor& input) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> DoBroadcast(const OpDesc& desc, const at::Tensor& tensor,
                                                            int root) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> DoSendRecv(const OpDesc& desc, std::vector<P2POp> ops) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> DoBarrier(const OpDesc& desc) = 0;
  virtual absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpDesc& desc, int color, int key,
                                                                const std::string& name) = 0;
  // Device check for a tensor argument; "" when acceptable, else what is wrong.
  virtual std::string CheckDevice(const at::Tensor& tensor) const = 0;

  Watchdog* watchdog_;
  std::shared_ptr<GroupProgress> progress_;
  // Send/recv progress is per rank pair, not per group: its own counter, never compared.
  std::shared_ptr<GroupProgress> p2p_progress_;

 private:
  absl::Status CheckTensor(const char* op, const char* what, const at::Tensor& tensor) const;
};

}  // namespace tessera::parallel
