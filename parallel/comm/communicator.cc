// The backend-independent half of communicator.h: argument checks with messages that name the
// operation and the sizes, descriptions for the watchdog, and the blocking forms.
#include "parallel/comm/communicator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace tessera::parallel {
namespace {

const char* DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kDouble:
      return "float64";
    case at::kInt:
      return "int32";
    case at::kLong:
      return "int64";
    default:
      return c10::toString(dtype);
  }
}

std::string Describe(const at::Tensor& t) {
  return absl::StrCat(DtypeName(t.scalar_type()), "[", t.numel(), "]");
}

}  // namespace

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

const char* BackendName(Backend backend) {
  switch (backend) {
    case Backend::kLocal:
      return "local";
    case Backend::kMpi:
      return "mpi";
    case Backend::kNccl:
      return "nccl";
  }
  return "?";
}

bool IsSupportedDtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf || dtype == at::kDouble ||
         dtype == at::kInt || dtype == at::kLong;
}

Work::~Work() = default;

absl::Status Work::Wait() {
  if (waited_) return status_;
  status_ = WaitImpl();
  waited_ = true;
  if (!completes_asynchronously()) watchdog_->End(record_);
  return status_;
}

bool Work::IsCompleted() {
  if (record_->done.load()) return true;
  return TestImpl();
}

Communicator::Communicator(Watchdog* watchdog, const std::string& name, std::vector<int> world_ranks,
                           int rank)
    : watchdog_(watchdog) {
  p2p_progress_ = watchdog_->RegisterGroup(name + "/p2p", world_ranks, rank);
  progress_ = watchdog_->RegisterGroup(name, std::move(world_ranks), rank);
}

Communicator::~Communicator() = default;

std::shared_ptr<OpRecord> Communicator::BeginOp(const OpDesc& desc, std::function<bool()> poll) {
  const bool p2p = !desc.p2p_peers.empty();
  return watchdog_->Begin(p2p ? p2p_progress_ : progress_, desc.op, desc.detail, std::move(poll),
                          desc.p2p_peers);
}

absl::Status Communicator::CheckTensor(const char* op, const char* what, const at::Tensor& t) const {
  const std::string where = absl::StrCat(op, " on group ", name(), ": ", what);
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(where, " is an undefined tensor"));
  if (!IsSupportedDtype(t.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has dtype ", DtypeName(t.scalar_type()),
                                                   "; supported: float32, bfloat16, float16, float64, "
                                                   "int32, int64"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " is not contiguous: pass a contiguous tensor (the result is written into it)"));
  }
  if (std::string device = CheckDevice(t); !device.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", device));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::AllReduceAsync(const at::Tensor& tensor, ReduceOp op) {
  TS_RETURN_IF_ERROR(CheckTensor("all_reduce", "the tensor", tensor));
  return DoAllReduce({"all_reduce", absl::StrCat(Describe(tensor), ", ", ReduceOpName(op))}, tensor, op);
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::ReduceScatterAsync(const at::Tensor& output,
                                                                       const at::Tensor& input, ReduceOp op) {
  TS_RETURN_IF_ERROR(CheckTensor("reduce_scatter", "the output", output));
  TS_RETURN_IF_ERROR(CheckTensor("reduce_scatter", "the input", input));
  if (input.scalar_type() != output.scalar_type()) {
    return absl::InvalidArgumentError(absl::StrCat("reduce_scatter on group ", name(), ": input is ",
                                                   Describe(input), " but output is ", Describe(output)));
  }
  if (input.numel() != output.numel() * size()) {
    return absl::InvalidArgumentError(absl::StrCat("reduce_scatter on group ", name(), ": the input has ",
                                                   input.numel(), " elements; expected group size ", size(),
                                                   " x the output's ", output.numel(), " = ",
                                                   output.numel() * size()));
  }
  return DoReduceScatter(
      {"reduce_scatter", absl::StrCat(Describe(input), " -> ", output.numel(), ", ", ReduceOpName(op))},
      output, input, op);
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::AllGatherAsync(const at::Tensor& output,
                                                                   const at::Tensor& input) {
  TS_RETURN_IF_ERROR(CheckTensor("all_gather", "the output", output));
  TS_RETURN_IF_ERROR(CheckTensor("all_gather", "the input", input));
  if (input.scalar_type() != output.scalar_type()) {
    return absl::InvalidArgumentError(absl::StrCat("all_gather on group ", name(), ": input is ",
                                                   Describe(input), " but output is ", Describe(output)));
  }
  if (output.numel() != input.numel() * size()) {
    return absl::InvalidArgumentError(absl::StrCat("all_gather on group ", name(), ": the output has ",
                                                   output.numel(), " elements; expected group size ", size(),
                                                   " x the input's ", input.numel(), " = ",
                                                   input.numel() * size()));
  }
  return DoAllGather({"all_gather", absl::StrCat(Describe(input), " x ", size())}, output, input);
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::BroadcastAsync(const at::Tensor& tensor, int root) {
  TS_RETURN_IF_ERROR(CheckTensor("broadcast", "the tensor", tensor));
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast on group ", name(), ": root ", root,
                                                   " is not a rank of the group (size ", size(), ")"));
  }
  return DoBroadcast({"broadcast", absl::StrCat(Describe(tensor), " from ", root)}, tensor, root);
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::SendRecvAsync(std::vector<P2POp> ops) {
  std::vector<std::string> parts;
  std::vector<int> peers;
  for (const P2POp& p : ops) {
    const bool send = p.kind == P2POp::Kind::kSend;
    TS_RETURN_IF_ERROR(CheckTensor("send_recv", send ? "a sent tensor" : "a received tensor", p.tensor));
    if (p.peer < 0 || p.peer >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("send_recv on group ", name(), ": peer ", p.peer,
                                                     " is not a rank of the group (size ", size(), ")"));
    }
    if (parts.size() < 4) {
      parts.push_back(
          absl::StrCat(send ? "send " : "recv ", Describe(p.tensor), send ? " to " : " from ", p.peer));
    }
    const int world_peer = world_ranks()[p.peer];
    if (std::find(peers.begin(), peers.end(), world_peer) == peers.end()) peers.push_back(world_peer);
  }
  if (ops.size() > parts.size()) parts.push_back(absl::StrCat("... (", ops.size(), " operations)"));
  if (ops.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("send_recv on group ", name(), ": no operations"));
  }
  OpDesc desc{"send_recv", absl::StrJoin(parts, ", "), std::move(peers)};
  return DoSendRecv(desc, std::move(ops));
}

absl::StatusOr<std::unique_ptr<Work>> Communicator::BarrierAsync() { return DoBarrier({"barrier", ""}); }

absl::Status Communicator::AllReduce(const at::Tensor& tensor, ReduceOp op) {
  TS_ASSIGN_OR_RETURN(auto work, AllReduceAsync(tensor, op));
  return work->Wait();
}

absl::Status Communicator::ReduceScatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op) {
  TS_ASSIGN_OR_RETURN(auto work, ReduceScatterAsync(output, input, op));
  return work->Wait();
}

absl::Status Communicator::AllGather(const at::Tensor& output, const at::Tensor& input) {
  TS_ASSIGN_OR_RETURN(auto work, AllGatherAsync(output, input));
  return work->Wait();
}

absl::Status Communicator::Broadcast(const at::Tensor& tensor, int root) {
  TS_ASSIGN_OR_RETURN(auto work, BroadcastAsync(tensor, root));
  return work->Wait();
}

absl::Status Communicator::SendRecv(std::vector<P2POp> ops) {
  TS_ASSIGN_OR_RETURN(auto work, SendRecvAsync(std::move(ops)));
  return work->Wait();
}

absl::Status Communicator::Send(const at::Tensor& tensor, int peer) {
  return SendRecv({P2POp{P2POp::Kind::kSend, tensor, peer}});
}

absl::Status Communicator::Recv(const at::Tensor& tensor, int peer) {
  return SendRecv({P2POp{P2POp::Kind::kRecv, tensor, peer}});
}

absl::Status Communicator::Barrier() {
  TS_ASSIGN_OR_RETURN(auto work, BarrierAsync());
  return work->Wait();
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(int color, int key,
                                                                  const std::string& name) {
  return DoSplit({"split", absl::StrCat("color ", color, ", key ", key, " -> ", name)}, color, key, name);
}

}  // namespace tessera::parallel
