// MpiCommunicator (mpi_comm.h). Each operation posts one or more nonblocking MPI calls (several
// when a count exceeds max_count) and returns an MpiWork that polls them; post-processing (the
// fp32 -> 16-bit rounding, the division of kAvg, unpacking chunked all-gathers) runs in Wait().
#include "parallel/comm/mpi_comm.h"

// Only MPI's C API: keep Open MPI's deprecated C++ bindings (and their library) out.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "parallel/comm/mpi_runtime.h"

namespace tessera::parallel {
namespace {

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, len);
}

// The MPI type that moves a dtype's bytes unchanged.
MPI_Datatype RawType(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;
    default:
      return MPI_DATATYPE_NULL;  // rejected earlier by IsSupportedDtype
  }
}

// 16-bit floats are reduced in float32 (see mpi_comm.h).
bool Widens(at::ScalarType dtype) { return dtype == at::kBFloat16 || dtype == at::kHalf; }

MPI_Op ToMpi(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

// Divides a sum by the group size for kAvg; integers truncate toward zero.
void Average(const at::Tensor& t, int size) {
  if (at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) {
    t.div_(size, "trunc");
  } else {
    t.div_(size);
  }
}

char* Bytes(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

bool Overlaps(const at::Tensor& a, const at::Tensor& b) {
  const char* a0 = Bytes(a);
  const char* b0 = Bytes(b);
  return a.numel() > 0 && b.numel() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

class MpiWork final : public Work {
 public:
  MpiWork(Watchdog* watchdog, std::shared_ptr<OpRecord> record, std::vector<MPI_Request> requests,
          std::function<void()> finish, std::vector<at::Tensor> keep)
      : Work(watchdog, std::move(record)),
        requests_(std::move(requests)),
        finish_(std::move(finish)),
        keep_(std::move(keep)) {}
  ~MpiWork() override {
    // MPI may still write into the buffers: never let them go before it is done.
    if (!waited()) Wait().IgnoreError();
  }

 protected:
  absl::Status WaitImpl() override {
    // Poll rather than block, so a deadline is seen here too; back off to a short sleep so that
    // oversubscribed ranks leave the cores to the ranks that must make progress.
    int polls = 0;
    auto pause = std::chrono::microseconds(10);
    for (;;) {
      int done = 0;
      const int rc =
          MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) {
        const std::string text = absl::StrCat(MpiErrorText(rc), " (a peer process probably died)");
        watchdog_->Fail(FailureKind::kBackendError, record_.get(), text);
        return absl::UnavailableError(text);
      }
      if (done) break;
      if (Clock::now() > record_->deadline) {
        watchdog_->Fail(FailureKind::kTimeout, record_.get(), "");
        return absl::DeadlineExceededError(record_->Describe());
      }
      if (++polls > 32) {
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(200));
      }
    }
    if (finish_) finish_();
    keep_.clear();
    return absl::OkStatus();
  }
  bool TestImpl() override {
    int done = 0;
    MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
    return done != 0;
  }

 private:
  std::vector<MPI_Request> requests_;
  std::function<void()> finish_;
  std::vector<at::Tensor> keep_;  // buffers MPI reads or writes until completion
};

// [offset, length) pieces of `count` elements, at most `max` each; one empty piece for count 0
// (every rank must still take part in the collective).
std::vector<std::pair<int64_t, int>> Chunks(int64_t count, int64_t max) {
  std::vector<std::pair<int64_t, int>> out;
  for (int64_t off = 0; off < count; off += max)
    out.emplace_back(off, static_cast<int>(std::min(max, count - off)));
  if (out.empty()) out.emplace_back(0, 0);
  return out;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(Watchdog* watchdog, MPI_Comm comm, const std::string& name, std::vector<int> world_ranks,
                  int rank, int64_t max_count)
      : Communicator(watchdog, name, std::move(world_ranks), rank), comm_(comm), max_count_(max_count) {}

  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_NULL && MpiRuntime::IsInitialized()) MPI_Comm_free(&comm_);
  }

  Backend backend() const override { return Backend::kMpi; }
  std::string device_description() const override { return "cpu"; }

 protected:
  std::string CheckDevice(const at::Tensor& t) const override {
    if (t.device().is_cpu()) return "";
    return absl::StrCat("the MPI backend communicates CPU tensors, not ", t.device().str(),
                        " (GPU tensors need the NCCL backend)");
  }

  // Posts the calls made by `post` (each returns an MPI error code and fills a request) under a
  // new watchdog record. `keep` (which `post` may extend) holds the buffers until completion.
  absl::StatusOr<std::unique_ptr<Work>> Launch(const OpDesc& desc,
                                               const std::function<int(std::vector<MPI_Request>*)>& post,
                                               std::function<void()> finish, std::vector<at::Tensor>* keep) {
    auto record = BeginOp(desc);
    std::vector<MPI_Request> requests;
    const int rc = post(&requests);
    std::vector<at::Tensor> buffers = std::move(*keep);
    if (rc != MPI_SUCCESS) {
      watchdog_->Fail(FailureKind::kBackendError, record.get(), absl::StrCat("posting: ", MpiErrorText(rc)));
      return absl::UnavailableError(MpiErrorText(rc));
    }
    return std::unique_ptr<Work>(new MpiWork(watchdog_, std::move(record), std::move(requests),
                                             std::move(finish), std::move(buffers)));
  }

  absl::StatusOr<std::unique_ptr<Work>> DoAllReduce(const OpDesc& desc, const at::Tensor& tensor,
                                                    ReduceOp op) override {
    const bool widen = Widens(tensor.scalar_type());
    at::Tensor buffer = widen ? tensor.to(at::kFloat) : tensor;
    const MPI_Datatype type = widen ? MPI_FLOAT : RawType(tensor.scalar_type());
    const int64_t elem = buffer.element_size();
    auto post = [&](std::vector<MPI_Request>* requests) {
      for (auto [off, len] : Chunks(buffer.numel(), max_count_)) {
        requests->emplace_back();
        const int rc = MPI_Iallreduce(MPI_IN_PLACE, Bytes(buffer) + off * elem, len, type, ToMpi(op), comm_,
                                      &requests->back());
        if (rc != MPI_SUCCESS) return rc;
      }
      return MPI_SUCCESS;
    };
    const int n = size();
    auto finish = [tensor, buffer, widen, op, n] {
      if (op == ReduceOp::kAvg) Average(buffer, n);
      if (widen) tensor.copy_(buffer);
    };
    std::vector<at::Tensor> keep = {tensor, buffer};
    return Launch(desc, post, finish, &keep);
  }

  absl::StatusOr<std::unique_ptr<Work>> DoReduceScatter(const OpDesc& desc, const at::Tensor& output,
                                                        const at::Tensor& input, ReduceOp op) override {
    const bool widen = Widens(input.scalar_type());
    at::Tensor source = widen ? input.to(at::kFloat) : input;
    // Reduce into a separate buffer when widening or when output aliases input (MPI forbids it).
    const bool direct = !widen && !Overlaps(output, input);
    at::Tensor dest = direct ? output : at::empty({output.numel()}, source.options());
    const MPI_Datatype type = widen ? MPI_FLOAT : RawType(input.scalar_type());
    const int64_t block = output.numel();
    const int64_t elem = source.element_size();
    std::vector<at::Tensor> keep = {output, input, source, dest};
    auto post = [&](std::vector<MPI_Request>* requests) {
      const auto chunks = Chunks(block, max_count_);
      for (auto [off, len] : chunks) {
        // A chunk takes the same slice of every rank's block: pack them contiguously unless the
        // block fits in one call.
        at::Tensor packed =
            chunks.size() == 1 ? source : source.view({size(), block}).narrow(1, off, len).contiguous();
        keep.push_back(packed);
        requests->emplace_back();
        const int rc = MPI_Ireduce_scatter_block(Bytes(packed), Bytes(dest) + off * elem, len, type,
                                                 ToMpi(op), comm_, &requests->back());
        if (rc != MPI_SUCCESS) return rc;
      }
      return MPI_SUCCESS;
    };
    const int n = size();
    auto finish = [output, dest, direct, op, n] {
      if (op == ReduceOp::kAvg) Average(dest, n);
      if (!direct) output.view(-1).copy_(dest);
    };
    return Launch(desc, post, finish, &keep);
  }

  absl::StatusOr<std::unique_ptr<Work>> DoAllGather(const OpDesc& desc, const at::Tensor& output,
                                                    const at::Tensor& input) override {
    const MPI_Datatype type = RawType(input.scalar_type());
    const int64_t count = input.numel();
    const int64_t elem = input.element_size();
    // In place when input is this rank's slot of output (as NCCL allows); a copy when it
    // overlaps any other way.
    const bool in_place = count > 0 && Bytes(input) == Bytes(output) + rank() * count * elem;
    at::Tensor source = !in_place && Overlaps(output, input) ? input.clone() : input;
    std::vector<at::Tensor> keep = {output, input, source};
    // Filled by `post` (which runs inside Launch), run by `finish`.
    auto unpack = std::make_shared<std::vector<std::function<void()>>>();
    auto post = [&](std::vector<MPI_Request>* requests) {
      const auto chunks = Chunks(count, max_count_);
      for (auto [off, len] : chunks) {
        requests->emplace_back();
        int rc;
        if (chunks.size() == 1) {
          rc = MPI_Iallgather(in_place ? MPI_IN_PLACE : Bytes(source), len, type, Bytes(output), len, type,
                              comm_, &requests->back());
        } else {
          // Gather this chunk of every rank's block into a buffer, then copy it into the blocks.
          at::Tensor gathered = at::empty({size(), len}, input.options());
          keep.push_back(gathered);
          rc = MPI_Iallgather(Bytes(source) + off * elem, len, type, Bytes(gathered), len, type, comm_,
                              &requests->back());
          unpack->push_back([output, gathered, off = off, len = len, n = size(), count] {
            output.view({n, count}).narrow(1, off, len).copy_(gathered);
          });
        }
        if (rc != MPI_SUCCESS) return rc;
      }
      return MPI_SUCCESS;
    };
    auto finish = [unpack] {
      for (auto& step : *unpack) step();
    };
    return Launch(desc, post, finish, &keep);
  }

  absl::StatusOr<std::unique_ptr<Work>> DoBroadcast(const OpDesc& desc, const at::Tensor& tensor,
                                                    int root) override {
    const MPI_Datatype type = RawType(tensor.scalar_type());
    const int64_t elem = tensor.element_size();
    auto post = [&](std::vector<MPI_Request>* requests) {
      for (auto [off, len] : Chunks(tensor.numel(), max_count_)) {
        requests->emplace_back();
        const int rc = MPI_Ibcast(Bytes(tensor) + off * elem, len, type, root, comm_, &requests->back());
        if (rc != MPI_SUCCESS) return rc;
      }
      return MPI_SUCCESS;
    };
    std::vector<at::Tensor> keep = {tensor};
    return Launch(desc, post, nullptr, &keep);
  }

  absl::StatusOr<std::unique_ptr<Work>> DoSendRecv(const OpDesc& desc, std::vector<P2POp> ops) override {
    std::vector<at::Tensor> keep;
    auto post = [&](std::vector<MPI_Request>* requests) {
      // Receives first, so that a send to a rank that already posted its receive can complete
      // without buffering.
      for (bool recv_pass : {true, false}) {
        for (const P2POp& p : ops) {
          if ((p.kind == P2POp::Kind::kRecv) != recv_pass) continue;
          keep.push_back(p.tensor);
          const MPI_Datatype type = RawType(p.tensor.scalar_type());
          const int64_t elem = p.tensor.element_size();
          for (auto [off, len] : Chunks(p.tensor.numel(), max_count_)) {
            requests->emplace_back();
            const int rc =
                recv_pass
                    ? MPI_Irecv(Bytes(p.tensor) + off * elem, len, type, p.peer, 0, comm_, &requests->back())
                    : MPI_Isend(Bytes(p.tensor) + off * elem, len, type, p.peer, 0, comm_, &requests->back());
            if (rc != MPI_SUCCESS) return rc;
          }
        }
      }
      return MPI_SUCCESS;
    };
    return Launch(desc, post, nullptr, &keep);
  }

  absl::StatusOr<std::unique_ptr<Work>> DoBarrier(const OpDesc& desc) override {
    auto post = [&](std::vector<MPI_Request>* requests) {
      requests->emplace_back();
      return MPI_Ibarrier(comm_, &requests->back());
    };
    std::vector<at::Tensor> keep;
    return Launch(desc, post, nullptr, &keep);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpDesc& desc, int color, int key,
                                                        const std::string& name) override {
    // MPI_Comm_split blocks; the watchdog still sees its record.
    auto record = BeginOp(desc);
    MPI_Comm child = MPI_COMM_NULL;
    const int rc = MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child);
    watchdog_->End(record);
    if (rc != MPI_SUCCESS) {
      watchdog_->Fail(FailureKind::kBackendError, record.get(),
                      absl::StrCat("MPI_Comm_split: ", MpiErrorText(rc)));
      return absl::UnavailableError(MpiErrorText(rc));
    }
    if (child == MPI_COMM_NULL) return std::unique_ptr<Communicator>();
    return Wrap(child, name, max_count_, watchdog_);
  }

 public:
  static std::unique_ptr<Communicator> Wrap(MPI_Comm comm, const std::string& name, int64_t max_count,
                                            Watchdog* watchdog) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    // The members' world ranks, for messages and for the watchdog's questions.
    MPI_Group group, world_group;
    MPI_Comm_group(comm, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    std::vector<int> local(size), world(size);
    for (int i = 0; i < size; ++i) local[i] = i;
    MPI_Group_translate_ranks(group, size, local.data(), world_group, world.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    return std::make_unique<MpiCommunicator>(watchdog, comm, name, std::move(world), rank, max_count);
  }

 private:
  MPI_Comm comm_;
  int64_t max_count_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(Watchdog* watchdog,
                                                                         const MpiCommOptions& options) {
  if (!MpiRuntime::IsInitialized()) {
    return absl::FailedPreconditionError("the MPI backend needs MPI initialized (MpiRuntime)");
  }
  auto record = watchdog->Begin(nullptr, "MPI_Comm_dup", "world");
  MPI_Comm comm = MPI_COMM_NULL;
  const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  watchdog->End(record);
  if (rc != MPI_SUCCESS) return absl::UnavailableError(absl::StrCat("MPI_Comm_dup: ", MpiErrorText(rc)));
  const int64_t max_count = options.max_count > 0 ? std::min<int64_t>(options.max_count, INT_MAX) : INT_MAX;
  return MpiCommunicator::Wrap(comm, "world", max_count, watchdog);
}

}  // namespace tessera::parallel
