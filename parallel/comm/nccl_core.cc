// NCCL and CUDA runtime wrappers for nccl_core.h. Each call's error names the NCCL or CUDA
// function and its error text, so a failure in a job of thousands of ranks says what failed.
#include "parallel/comm/nccl_core.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "Tessera needs NCCL >= 2.18 (ncclCommSplit)"
#endif

namespace tessera::parallel::nccl {
namespace {

absl::Status NcclError(const char* call, ncclResult_t rc) {
  std::string text = absl::StrCat(call, " failed: ", ncclGetErrorString(rc));
  if (const char* last = ncclGetLastError(nullptr); last != nullptr && last[0] != '\0') {
    absl::StrAppend(&text, " (", last, ")");
  }
  return absl::UnavailableError(text);
}

absl::Status CudaError(const char* call, cudaError_t rc) {
  return absl::UnavailableError(absl::StrCat(call, " failed: ", cudaGetErrorString(rc)));
}

#define TS_NCCL(call)                                                     \
  do {                                                                    \
    ncclResult_t ts_nccl_rc_ = (call);                                    \
    if (ts_nccl_rc_ != ncclSuccess) return NcclError(#call, ts_nccl_rc_); \
  } while (0)

#define TS_CUDA(call)                                                     \
  do {                                                                    \
    cudaError_t ts_cuda_rc_ = (call);                                     \
    if (ts_cuda_rc_ != cudaSuccess) return CudaError(#call, ts_cuda_rc_); \
  } while (0)

ncclDataType_t ToNccl(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t ToNccl(RedOp op) {
  switch (op) {
    case RedOp::kSum:
      return ncclSum;
    case RedOp::kAvg:
      return ncclAvg;
    case RedOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

ncclComm_t C(void* comm) { return static_cast<ncclComm_t>(comm); }
cudaStream_t S(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

std::string VersionString() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "NCCL (version unknown)";
  // Since 2.9 the code is major * 10000 + minor * 100 + patch.
  return absl::StrFormat("NCCL %d.%d.%d", version / 10000, (version / 100) % 100, version % 100);
}

std::string CudaVersionString() {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  std::string out = absl::StrFormat("CUDA runtime %d.%d", runtime / 1000, (runtime % 1000) / 10);
  if (driver > 0) {
    absl::StrAppend(&out, absl::StrFormat(", driver %d.%d", driver / 1000, (driver % 1000) / 10));
  } else {
    absl::StrAppend(&out, ", no driver");
  }
  return out;
}

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

absl::Status SetDevice(int device) {
  TS_CUDA(cudaSetDevice(device));
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetUniqueId() {
  ncclUniqueId id;
  TS_NCCL(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Stream>> Stream::Create(int device) {
  TS_CUDA(cudaSetDevice(device));
  cudaStream_t stream;
  // High priority (numerically lowest), as communication gates compute on other ranks.
  int least = 0, greatest = 0;
  TS_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  TS_CUDA(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, greatest));
  return std::unique_ptr<Stream>(new Stream(stream, device));
}

Stream::~Stream() {
  if (stream_ != nullptr) {
    cudaSetDevice(device_);
    cudaStreamDestroy(S(stream_));
  }
}

absl::StatusOr<std::unique_ptr<Event>> Event::Create(int device) {
  TS_CUDA(cudaSetDevice(device));
  cudaEvent_t event;
  TS_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return std::unique_ptr<Event>(new Event(event, device));
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

absl::Status Event::Record(void* stream) {
  TS_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(event_), S(stream)));
  return absl::OkStatus();
}

absl::Status Event::MakeStreamWait(void* stream) {
  TS_CUDA(cudaStreamWaitEvent(S(stream), static_cast<cudaEvent_t>(event_), 0));
  return absl::OkStatus();
}

bool Event::Query() const {
  const cudaError_t rc = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  return rc != cudaErrorNotReady;
}

absl::StatusOr<std::unique_ptr<Comm>> Comm::InitRank(int nranks, int rank, const std::string& unique_id,
                                                     int device) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(
        absl::StrCat("an NCCL unique id has ", sizeof(id.internal), " bytes, got ", unique_id.size()));
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  TS_CUDA(cudaSetDevice(device));
  ncclComm_t comm;
  TS_NCCL(ncclCommInitRank(&comm, nranks, id, rank));
  return std::unique_ptr<Comm>(new Comm(comm, rank, nranks, device));
}

Comm::~Comm() {
  if (comm_ == nullptr) return;
  cudaSetDevice(device_);
  if (failed_) {
    ncclCommAbort(C(comm_));
  } else {
    ncclCommDestroy(C(comm_));
  }
}

absl::StatusOr<std::unique_ptr<Comm>> Comm::Split(int color, int key) {
  TS_CUDA(cudaSetDevice(device_));
  ncclComm_t child = nullptr;
  TS_NCCL(ncclCommSplit(C(comm_), color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr));
  if (child == nullptr) return std::unique_ptr<Comm>();
  int rank = 0, size = 0;
  TS_NCCL(ncclCommUserRank(child, &rank));
  TS_NCCL(ncclCommCount(child, &size));
  return std::unique_ptr<Comm>(new Comm(child, rank, size, device_));
}

absl::Status Comm::AllReduce(const void* send, void* recv, size_t count, DataType type, RedOp op,
                             void* stream) {
  TS_NCCL(ncclAllReduce(send, recv, count, ToNccl(type), ToNccl(op), C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::ReduceScatter(const void* send, void* recv, size_t recv_count, DataType type, RedOp op,
                                 void* stream) {
  TS_NCCL(ncclReduceScatter(send, recv, recv_count, ToNccl(type), ToNccl(op), C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::AllGather(const void* send, void* recv, size_t send_count, DataType type, void* stream) {
  TS_NCCL(ncclAllGather(send, recv, send_count, ToNccl(type), C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::Broadcast(void* buffer, size_t count, DataType type, int root, void* stream) {
  TS_NCCL(ncclBroadcast(buffer, buffer, count, ToNccl(type), root, C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::GroupStart() {
  TS_NCCL(ncclGroupStart());
  return absl::OkStatus();
}

absl::Status Comm::GroupEnd() {
  TS_NCCL(ncclGroupEnd());
  return absl::OkStatus();
}

absl::Status Comm::Send(const void* buffer, size_t count, DataType type, int peer, void* stream) {
  TS_NCCL(ncclSend(buffer, count, ToNccl(type), peer, C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::Recv(void* buffer, size_t count, DataType type, int peer, void* stream) {
  TS_NCCL(ncclRecv(buffer, count, ToNccl(type), peer, C(comm_), S(stream)));
  return absl::OkStatus();
}

absl::Status Comm::AsyncError() {
  ncclResult_t async = ncclSuccess;
  TS_NCCL(ncclCommGetAsyncError(C(comm_), &async));
  if (async != ncclSuccess && async != ncclInProgress) {
    failed_ = true;
    return NcclError("NCCL communication (asynchronous error)", async);
  }
  return absl::OkStatus();
}

void Comm::Abort() {
  if (comm_ == nullptr) return;
  ncclCommAbort(C(comm_));
  comm_ = nullptr;
}

}  // namespace tessera::parallel::nccl
