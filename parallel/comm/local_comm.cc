// LocalCommunicator (local_comm.h): collectives of a group of one. They still take sequence
// numbers, so logs and the watchdog read the same as with several ranks.
#include "parallel/comm/local_comm.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace tessera::parallel {
namespace {

class DoneWork final : public Work {
 public:
  DoneWork(Watchdog* watchdog, std::shared_ptr<OpRecord> record) : Work(watchdog, std::move(record)) {}
  ~DoneWork() override {
    if (!waited()) Wait().IgnoreError();
  }

 protected:
  absl::Status WaitImpl() override { return absl::OkStatus(); }
  bool TestImpl() override { return true; }
};

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(Watchdog* watchdog, const std::string& name, int world_rank)
      : Communicator(watchdog, name, {world_rank}, 0) {}

  Backend backend() const override { return Backend::kLocal; }
  std::string device_description() const override { return "any device"; }

 protected:
  std::string CheckDevice(const at::Tensor&) const override { return ""; }

  std::unique_ptr<Work> Done(const OpDesc& desc) {
    return std::make_unique<DoneWork>(watchdog_, BeginOp(desc));
  }

  // The reduction over one rank is the tensor itself (kAvg divides by 1).
  absl::StatusOr<std::unique_ptr<Work>> DoAllReduce(const OpDesc& desc, const at::Tensor&,
                                                    ReduceOp) override {
    return Done(desc);
  }
  absl::StatusOr<std::unique_ptr<Work>> DoReduceScatter(const OpDesc& desc, const at::Tensor& output,
                                                        const at::Tensor& input, ReduceOp) override {
    auto work = Done(desc);
    if (!output.is_same(input)) output.view(-1).copy_(input.view(-1));
    return work;
  }
  absl::StatusOr<std::unique_ptr<Work>> DoAllGather(const OpDesc& desc, const at::Tensor& output,
                                                    const at::Tensor& input) override {
    auto work = Done(desc);
    if (!output.is_same(input)) output.view(-1).copy_(input.view(-1));
    return work;
  }
  absl::StatusOr<std::unique_ptr<Work>> DoBroadcast(const OpDesc& desc, const at::Tensor&, int) override {
    return Done(desc);
  }
  absl::StatusOr<std::unique_ptr<Work>> DoSendRecv(const OpDesc& desc, std::vector<P2POp> ops) override {
    // The only peer is this rank: the k-th send feeds the k-th receive.
    std::vector<const P2POp*> sends, recvs;
    for (const P2POp& p : ops) (p.kind == P2POp::Kind::kSend ? sends : recvs).push_back(&p);
    if (sends.size() != recvs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("send_recv on group ", name(),
                                                     " (one rank): ", sends.size(), " sends but ",
                                                     recvs.size(), " receives to and from itself"));
    }
    for (size_t i = 0; i < sends.size(); ++i) {
      if (sends[i]->tensor.numel() != recvs[i]->tensor.numel() ||
          sends[i]->tensor.scalar_type() != recvs[i]->tensor.scalar_type()) {
        return absl::InvalidArgumentError(absl::StrCat("send_recv on group ", name(), ": send ", i,
                                                       " and receive ", i, " differ in size or dtype"));
      }
    }
    auto work = Done(desc);
    for (size_t i = 0; i < sends.size(); ++i) recvs[i]->tensor.view(-1).copy_(sends[i]->tensor.view(-1));
    return work;
  }
  absl::StatusOr<std::unique_ptr<Work>> DoBarrier(const OpDesc& desc) override { return Done(desc); }
  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpDesc& desc, int color, int,
                                                        const std::string& name) override {
    Done(desc);
    if (color < 0) return std::unique_ptr<Communicator>();
    return CreateLocalCommunicator(watchdog_, name, world_ranks()[0]);
  }
};

}  // namespace

std::unique_ptr<Communicator> CreateLocalCommunicator(Watchdog* watchdog, const std::string& name,
                                                      int world_rank) {
  return std::make_unique<LocalCommunicator>(watchdog, name, world_rank);
}

}  // namespace tessera::parallel
