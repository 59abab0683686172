// NcclCommunicator (nccl_comm.h). The NCCL and CUDA calls go through nccl_core (no LibTorch);
// this file adds tensors, the stream ordering and the watchdog records. The only lines that
// need LibTorch's CUDA API (the caller's current stream, the caching allocator's recordStream,
// the device guard) sit under TESSERA_TORCH_HAS_CUDA, so that the file also compiles, as a
// check, against a CPU LibTorch: there it uses the legacy default stream, which is never
// reached (a CPU LibTorch has no CUDA tensors).
#include "parallel/comm/nccl_comm.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "parallel/comm/nccl_core.h"

#if TESSERA_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tessera::parallel {
namespace {

// The caller's current stream on `device`, where the tensors' values are being produced.
void* CurrentStream(int device) {
#if TESSERA_TORCH_HAS_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  return nullptr;  // the legacy default stream
#endif
}

// Tells the caching allocator that `stream` uses the tensor's memory, so the memory is not
// reused before the communication on that stream finished, even if the caller drops the tensor.
void RecordStream(const at::Tensor& t, void* stream, int device) {
#if TESSERA_TORCH_HAS_CUDA
  c10::cuda::CUDACachingAllocator::recordStream(
      t.storage().data_ptr(), c10::cuda::getStreamFromExternal(static_cast<cudaStream_t>(stream),
                                                               static_cast<c10::DeviceIndex>(device)));
#else
  (void)t;
  (void)stream;
  (void)device;
#endif
}

absl::StatusOr<nccl::DataType> ToNccl(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return nccl::DataType::kFloat32;
    case at::kDouble:
      return nccl::DataType::kFloat64;
    case at::kBFloat16:
      return nccl::DataType::kBFloat16;
    case at::kHalf:
      return nccl::DataType::kFloat16;
    case at::kInt:
      return nccl::DataType::kInt32;
    case at::kLong:
      return nccl::DataType::kInt64;
    default:
      return absl::InvalidArgumentError("dtype not supported by NCCL");
  }
}

// Sets the thread's CUDA device once per thread (the watchdog thread polls events; without it,
// CUDA would create a context on device 0 there).
void EnsureDevice(int device) {
  thread_local int current = -1;
  if (current != device) {
    nccl::SetDevice(device).IgnoreError();
    current = device;
  }
}

class NcclWork final : public Work {
 public:
  NcclWork(Watchdog* watchdog, std::shared_ptr<OpRecord> record, std::shared_ptr<nccl::Event> done,
           int device, bool host_blocking, std::function<void()> finish)
      : Work(watchdog, std::move(record)),
        done_(std::move(done)),
        device_(device),
        host_blocking_(host_blocking),
        finish_(std::move(finish)) {}

 protected:
  absl::Status WaitImpl() override {
    EnsureDevice(device_);
    if (host_blocking_) {
      // Barrier: the host waits too, polling so that the deadline is seen.
      while (!done_->Query()) {
        if (Clock::now() > record_->deadline) {
          watchdog_->Fail(FailureKind::kTimeout, record_.get(), "");
          return absl::DeadlineExceededError(record_->Describe());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    TS_RETURN_IF_ERROR(done_->MakeStreamWait(CurrentStream(device_)));
    // Post-processing (integer averages) runs on the current stream, after the operation.
    if (finish_) finish_();
    return absl::OkStatus();
  }
  bool TestImpl() override {
    EnsureDevice(device_);
    return done_->Query();
  }
  // The watchdog thread sees completion by polling the event.
  bool completes_asynchronously() const override { return true; }

 private:
  std::shared_ptr<nccl::Event> done_;
  int device_;
  bool host_blocking_;
  std::function<void()> finish_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Watchdog* watchdog, std::shared_ptr<nccl::Comm> comm, std::unique_ptr<nccl::Stream> stream,
                   const std::string& name, std::vector<int> world_ranks)
      : Communicator(watchdog, name, std::move(world_ranks), comm->rank()),
        comm_(std::move(comm)),
        stream_(std::move(stream)) {
    std::weak_ptr<nccl::Comm> weak = comm_;
    watchdog_->AddHealthCheck([weak]() -> absl::Status {
      auto comm = weak.lock();
      return comm ? comm->AsyncError() : absl::OkStatus();
    });
    // A failing rank aborts its communicators before it exits: a kernel of this rank blocked in
    // a collective would otherwise keep the GPU busy, and its peers' NCCL waiting, after it.
    watchdog_->AddAbortHook([weak] {
      if (auto comm = weak.lock()) comm->Abort();
    });
  }

  Backend backend() const override { return Backend::kNccl; }
  std::string device_description() const override { return absl::StrCat("cuda:", comm_->device()); }

  static absl::StatusOr<std::unique_ptr<Communicator>> Make(Watchdog* watchdog,
                                                            std::unique_ptr<nccl::Comm> comm,
                                                            const std::string& name,
                                                            std::vector<int> world_ranks) {
    TS_ASSIGN_OR_RETURN(auto stream, nccl::Stream::Create(comm->device()));
    return std::unique_ptr<Communicator>(
        new NcclCommunicator(watchdog, std::shared_ptr<nccl::Comm>(std::move(comm)), std::move(stream), name,
                             std::move(world_ranks)));
  }

 protected:
  std::string CheckDevice(const at::Tensor& t) const override {
    if (t.device().is_cuda() && t.device().index() == comm_->device()) return "";
    return absl::StrCat("the NCCL backend of this rank communicates tensors on cuda:", comm_->device(),
                        ", not ", t.device().str());
  }

  // Orders the communication stream after the caller's stream, runs `enqueue` on it under a new
  // watchdog record and returns the Work that waits for it.
  absl::StatusOr<std::unique_ptr<Work>> Launch(const OpDesc& desc, const std::vector<at::Tensor>& tensors,
                                               const std::function<absl::Status(void* stream)>& enqueue,
                                               bool host_blocking = false,
                                               std::function<void()> finish = nullptr) {
    const int device = comm_->device();
    EnsureDevice(device);
    void* compute = CurrentStream(device);
    TS_ASSIGN_OR_RETURN(auto ready, nccl::Event::Create(device));
    TS_ASSIGN_OR_RETURN(std::shared_ptr<nccl::Event> done, nccl::Event::Create(device));
    TS_RETURN_IF_ERROR(ready->Record(compute));
    TS_RETURN_IF_ERROR(ready->MakeStreamWait(stream_->handle()));
    auto launched = std::make_shared<std::atomic<bool>>(false);
    auto record = BeginOp(desc, [done, launched, device] {
      if (!launched->load()) return false;
      EnsureDevice(device);
      return done->Query();
    });
    absl::Status status = enqueue(stream_->handle());
    if (status.ok()) status = done->Record(stream_->handle());
    if (!status.ok()) {
      watchdog_->Fail(FailureKind::kBackendError, record.get(), std::string(status.message()));
      return status;
    }
    launched->store(true);
    for (const at::Tensor& t : tensors) RecordStream(t, stream_->handle(), device);
    return std::unique_ptr<Work>(new NcclWork(watchdog_, std::move(record), std::move(done), device,
                                              host_blocking, std::move(finish)));
  }

  absl::StatusOr<std::unique_ptr<Work>> DoAllReduce(const OpDesc& desc, const at::Tensor& tensor,
                                                    ReduceOp op) override {
    TS_ASSIGN_OR_RETURN(nccl::DataType type, ToNccl(tensor.scalar_type()));
    // NCCL averages floats itself; integer averages are a sum, then a truncating division.
    const bool integral = at::isIntegralType(tensor.scalar_type(), false);
    const nccl::RedOp nop = op == ReduceOp::kMax                ? nccl::RedOp::kMax
                            : op == ReduceOp::kAvg && !integral ? nccl::RedOp::kAvg
                                                                : nccl::RedOp::kSum;
    std::function<void()> finish;
    if (op == ReduceOp::kAvg && integral) {
      const int n = size();
      finish = [tensor, n] { tensor.div_(n, "trunc"); };
    }
    return Launch(
        desc, {tensor},
        [&](void* stream) {
          return comm_->AllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, nop, stream);
        },
        false, std::move(finish));
  }

  absl::StatusOr<std::unique_ptr<Work>> DoReduceScatter(const OpDesc& desc, const at::Tensor& output,
                                                        const at::Tensor& input, ReduceOp op) override {
    TS_ASSIGN_OR_RETURN(nccl::DataType type, ToNccl(input.scalar_type()));
    const bool integral = at::isIntegralType(input.scalar_type(), false);
    const nccl::RedOp nop = op == ReduceOp::kMax                ? nccl::RedOp::kMax
                            : op == ReduceOp::kAvg && !integral ? nccl::RedOp::kAvg
                                                                : nccl::RedOp::kSum;
    std::function<void()> finish;
    if (op == ReduceOp::kAvg && integral) {
      const int n = size();
      finish = [output, n] { output.div_(n, "trunc"); };
    }
    return Launch(
        desc, {output, input},
        [&](void* stream) {
          return comm_->ReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), type, nop, stream);
        },
        false, std::move(finish));
  }

  absl::StatusOr<std::unique_ptr<Work>> DoAllGather(const OpDesc& desc, const at::Tensor& output,
                                                    const at::Tensor& input) override {
    TS_ASSIGN_OR_RETURN(nccl::DataType type, ToNccl(input.scalar_type()));
    return Launch(desc, {output, input}, [&](void* stream) {
      return comm_->AllGather(input.data_ptr(), output.data_ptr(), input.numel(), type, stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> DoBroadcast(const OpDesc& desc, const at::Tensor& tensor,
                                                    int root) override {
    TS_ASSIGN_OR_RETURN(nccl::DataType type, ToNccl(tensor.scalar_type()));
    return Launch(desc, {tensor}, [&](void* stream) {
      return comm_->Broadcast(tensor.data_ptr(), tensor.numel(), type, root, stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> DoSendRecv(const OpDesc& desc, std::vector<P2POp> ops) override {
    std::vector<at::Tensor> tensors;
    for (const P2POp& p : ops) tensors.push_back(p.tensor);
    return Launch(desc, tensors, [&](void* stream) -> absl::Status {
      TS_RETURN_IF_ERROR(comm_->GroupStart());
      absl::Status status;
      for (const P2POp& p : ops) {
        auto type = ToNccl(p.tensor.scalar_type());
        if (!type.ok()) {
          status = type.status();
          break;
        }
        status = p.kind == P2POp::Kind::kSend
                     ? comm_->Send(p.tensor.data_ptr(), p.tensor.numel(), *type, p.peer, stream)
                     : comm_->Recv(p.tensor.data_ptr(), p.tensor.numel(), *type, p.peer, stream);
        if (!status.ok()) break;
      }
      absl::Status end = comm_->GroupEnd();
      return status.ok() ? end : status;
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> DoBarrier(const OpDesc& desc) override {
    // NCCL has no barrier: a one-element all-reduce, and the host waits for it.
    at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, comm_->device()));
    return Launch(
        desc, {token},
        [&](void* stream) {
          return comm_->AllReduce(token.data_ptr(), token.data_ptr(), 1, nccl::DataType::kInt32,
                                  nccl::RedOp::kSum, stream);
        },
        /*host_blocking=*/true);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpDesc& desc, int color, int key,
                                                        const std::string& name) override {
    // Every rank of this group first learns each member's (color, key, world rank), so the new
    // group's members are known in its rank order (NCCL orders by key, then parent rank). All
    // ranks take part, including those that get no communicator.
    at::Tensor mine = at::tensor({static_cast<int64_t>(color), static_cast<int64_t>(key),
                                  static_cast<int64_t>(world_ranks()[rank()])},
                                 at::TensorOptions().dtype(at::kLong))
                          .to(at::Device(at::kCUDA, comm_->device()));
    at::Tensor all = at::empty({3 * size()}, mine.options());
    TS_RETURN_IF_ERROR(AllGather(all, mine));
    at::Tensor host = all.cpu().view({size(), 3});
    std::vector<std::pair<std::pair<int64_t, int64_t>, int>> members;  // ((key, parent rank), world rank)
    for (int r = 0; r < size(); ++r) {
      if (color >= 0 && host[r][0].item<int64_t>() == color) {
        members.push_back({{host[r][1].item<int64_t>(), r}, static_cast<int>(host[r][2].item<int64_t>())});
      }
    }
    std::sort(members.begin(), members.end());
    std::vector<int> world;
    for (const auto& m : members) world.push_back(m.second);

    // ncclCommSplit blocks until the group's ranks join; the watchdog sees its record.
    auto record = BeginOp(desc);
    auto child = comm_->Split(color, key);
    watchdog_->End(record);
    if (!child.ok()) {
      watchdog_->Fail(FailureKind::kBackendError, record.get(), std::string(child.status().message()));
      return child.status();
    }
    if (*child == nullptr) return std::unique_ptr<Communicator>();
    return Make(watchdog_, std::move(*child), name, std::move(world));
  }

 private:
  std::shared_ptr<nccl::Comm> comm_;
  std::unique_ptr<nccl::Stream> stream_;
};

}  // namespace

bool NcclBackendAvailable() { return true; }
std::string NcclBackendMissingReason() { return ""; }
std::string NcclVersion() { return nccl::VersionString(); }
std::string CudaVersion() { return nccl::CudaVersionString(); }
int CudaDeviceCount() { return nccl::DeviceCount(); }

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclWorldCommunicator(Watchdog* watchdog, int rank,
                                                                          int world_size, int device,
                                                                          const NcclBootstrap& bootstrap) {
  const int devices = nccl::DeviceCount();
  if (device < 0 || device >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", rank, ": CUDA device ", device, " does not exist (", devices, " visible)"));
  }
#if TESSERA_TORCH_HAS_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
#endif
  TS_RETURN_IF_ERROR(nccl::SetDevice(device));
  std::string id;
  if (rank == 0) {
    TS_ASSIGN_OR_RETURN(id, nccl::GetUniqueId());
  }
  TS_ASSIGN_OR_RETURN(id, bootstrap(id));
  auto record = watchdog->Begin(nullptr, "ncclCommInitRank", absl::StrCat("world of ", world_size));
  auto comm = nccl::Comm::InitRank(world_size, rank, id, device);
  watchdog->End(record);
  if (!comm.ok()) return comm.status();
  std::vector<int> world(world_size);
  for (int r = 0; r < world_size; ++r) world[r] = r;
  return NcclCommunicator::Make(watchdog, std::move(*comm), "world", std::move(world));
}

}  // namespace tessera::parallel
