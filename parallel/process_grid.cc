// ProcessGrid (process_grid.h): backend choice, bootstrap and the group communicators. The
// groups are made by splitting the world communicator, in one fixed order on every rank
// (tp, pp, dp, cp, dp x cp, model, embedding), each split's color being the lowest world rank of the group
// (unique per group) and its key the rank's position in the group.
#include "parallel/process_grid.h"

#include <torch/version.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/logging.h"
#include "core/status_macros.h"
#include "parallel/comm/local_comm.h"
#include "parallel/comm/mpi_comm.h"
#include "parallel/comm/nccl_comm.h"
#include "parallel/comm/rendezvous.h"

namespace tessera::parallel {
namespace {

absl::StatusOr<Backend> ChooseBackend(const LaunchInfo& launch, const GridOptions& o) {
  if (o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel: device '", o.device, "' is neither cpu nor cuda"));
  }
  const bool cuda = o.device == "cuda";
  if (o.backend == "auto") {
    if (cuda) return launch.world_size == 1 && !NcclBackendAvailable() ? Backend::kLocal : Backend::kNccl;
    return launch.world_size > 1 || launch.launched_by_mpi() ? Backend::kMpi : Backend::kLocal;
  }
  if (o.backend == "local") {
    if (launch.world_size > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.backend = local runs one process, but the launcher "
                       "started ",
                       launch.world_size, " (", launch.size_variable, ")"));
    }
    return Backend::kLocal;
  }
  if (o.backend == "mpi") {
    if (cuda) {
      return absl::InvalidArgumentError(
          "parallel.backend = mpi communicates CPU tensors; a CUDA run needs nccl");
    }
    return Backend::kMpi;
  }
  if (o.backend == "nccl") {
    if (!cuda) return absl::InvalidArgumentError("parallel.backend = nccl needs train.device = cuda");
    return Backend::kNccl;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parallel.backend '", o.backend, "' is not auto, local, mpi or nccl"));
}

// The NCCL bootstrap named by `rendezvous`, resolved against what the launch offers.
absl::StatusOr<NcclBootstrap> ChooseBootstrap(Runtime& runtime, const GridOptions& o) {
  const LaunchInfo& launch = runtime.launch();
  RendezvousOptions r;
  r.rank = launch.rank;
  r.world_size = launch.world_size;
  r.job_id = launch.job_id;
  r.timeout_s = runtime.options().startup_timeout_s;
  // Under srun without MASTER_ADDR: rank 0 runs on the first node of the step (Slurm's block
  // distribution), and the port follows from the job id (as in scripts/launch/slurm_train.sbatch).
  std::string host = launch.master_addr;
  int port = launch.master_port;
  if (host.empty() && launch.launcher == Launcher::kSlurm && !launch.nodes.empty()) {
    host = launch.nodes.front();
    if (port == 0) port = 20000 + static_cast<int>(std::hash<std::string>()(launch.job_id) % 20000);
  }
  std::string how = o.rendezvous;
  if (how == "auto") {
    how = runtime.mpi() ? "mpi" : !host.empty() || launch.world_size == 1 ? "tcp" : "";
    if (how.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", launch.rank, ": no way to hand NCCL's unique id to the ", launch.world_size,
                       " ranks: launch with mpirun, set MASTER_ADDR and MASTER_PORT (the host of rank 0 and "
                       "a free port), or "
                       "set parallel.rendezvous: file:/path/on/a/shared/filesystem"));
    }
  }
  if (how == "mpi") {
    MpiRuntime* mpi = runtime.mpi();
    if (mpi == nullptr) {
      return absl::InvalidArgumentError(
          "parallel.rendezvous = mpi, but MPI is not running (launch with mpirun)");
    }
    return NcclBootstrap([mpi](const std::string& id) -> absl::StatusOr<std::string> {
      std::string bytes = id;
      TS_RETURN_IF_ERROR(mpi->BroadcastFromRoot(&bytes));
      return bytes;
    });
  }
  if (how == "tcp") {
    return NcclBootstrap([host, port, r](const std::string& id) { return TcpRendezvous(host, port, r, id); });
  }
  if (how.rfind("file:", 0) == 0 && how.size() > 5) {
    const std::string path = how.substr(5);
    return NcclBootstrap([path, r](const std::string& id) { return FileRendezvous(path, r, id); });
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parallel.rendezvous '", o.rendezvous, "' is not auto, mpi, tcp or file:PATH"));
}

absl::StatusOr<int> ChooseDevice(const LaunchInfo& launch, const GridOptions& o) {
  const int count = CudaDeviceCount();
  if (count == 0)
    return absl::FailedPreconditionError(absl::StrCat("rank ", launch.rank, ": no CUDA device is visible"));
  if (o.device_index >= 0) {
    if (o.device_index >= count) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", launch.rank, ": CUDA device ", o.device_index,
                                                     " requested but ", count, " are visible"));
    }
    return o.device_index;
  }
  const int local = std::max(0, launch.local_rank);
  if (local < count) return local;
  // Each rank may see only its own GPU (Slurm's --gpus-per-task, CUDA_VISIBLE_DEVICES per rank).
  if (count == 1) return 0;
  return absl::FailedPreconditionError(
      absl::StrCat("rank ", launch.rank, " is local rank ", local, " on its node but only ", count,
                   " CUDA devices are visible: start at most one rank per GPU on each node"));
}

std::string Coords(const Coordinates& c, bool cp) {
  return absl::StrCat("tp", c.tp, cp ? absl::StrCat(" cp", c.cp) : "", " pp", c.pp, " dp", c.dp);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGrid>> ProcessGrid::Create(const LaunchInfo& launch,
                                                                 const GridOptions& options) {
  // Check what needs no communication first, so that bad input fails before anything starts.
  auto topology = Topology::Create(launch.world_size, options.dims, options.order);
  if (!topology.ok()) {
    const std::string from = launch.size_variable.empty() ? "a single process, no launcher"
                                                          : absl::StrCat("from ", launch.size_variable);
    return absl::InvalidArgumentError(
        absl::StrCat("parallel layout (parallel.tp, parallel.cp, parallel.pp, parallel.dp, "
                     "parallel.order) does not fit the launch: ",
                     topology.status().message(), " (world size ", from, ")"));
  }
  TS_ASSIGN_OR_RETURN(Backend backend, ChooseBackend(launch, options));
  RuntimeOptions r;
  const bool rendezvous_mpi = options.rendezvous == "mpi";
  r.mpi = backend == Backend::kMpi || (backend == Backend::kNccl && rendezvous_mpi)
              ? RuntimeOptions::Mpi::kRequired
          : backend == Backend::kLocal && !launch.launched_by_mpi() ? RuntimeOptions::Mpi::kNever
                                                                    : RuntimeOptions::Mpi::kAuto;
  r.startup_timeout_s = options.startup_timeout_s;
  r.comm_timeout_s = options.comm_timeout_s;
  r.install_signal_handlers = options.install_signal_handlers;
  r.exit_on_signal = options.exit_on_signal;
  r.on_fatal = options.on_fatal;
  TS_ASSIGN_OR_RETURN(std::shared_ptr<Runtime> runtime, Runtime::Create(launch, std::move(r)));
  return Create(std::move(runtime), options);
}

absl::StatusOr<std::unique_ptr<ProcessGrid>> ProcessGrid::Create(std::shared_ptr<Runtime> runtime,
                                                                 const GridOptions& options) {
  const LaunchInfo& launch = runtime->launch();
  TS_ASSIGN_OR_RETURN(Topology topology, Topology::Create(launch.world_size, options.dims, options.order));
  TS_ASSIGN_OR_RETURN(Backend backend, ChooseBackend(launch, options));
  std::unique_ptr<ProcessGrid> grid(new ProcessGrid(runtime, topology));
  grid->backend_ = backend;
  grid->coords_ = topology.CoordinatesOf(launch.rank);
  Watchdog* watchdog = &runtime->watchdog();

  switch (backend) {
    case Backend::kLocal:
      grid->world_ = CreateLocalCommunicator(watchdog, "world", launch.rank);
      break;
    case Backend::kMpi: {
      if (runtime->mpi() == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the MPI backend needs the processes started by an MPI launcher (mpirun, or srun --mpi=pmix); "
            "this one was started by: ",
            LauncherName(launch.launcher)));
      }
      TS_ASSIGN_OR_RETURN(grid->world_,
                          CreateMpiWorldCommunicator(watchdog, MpiCommOptions{options.max_count}));
      break;
    }
    case Backend::kNccl: {
      if (!NcclBackendAvailable()) {
        return absl::FailedPreconditionError(
            absl::StrCat("a CUDA run with ", launch.world_size,
                         " ranks needs the NCCL backend: ", NcclBackendMissingReason()));
      }
      TS_ASSIGN_OR_RETURN(grid->device_index_, ChooseDevice(launch, options));
      TS_ASSIGN_OR_RETURN(NcclBootstrap bootstrap, ChooseBootstrap(*runtime, options));
      TS_ASSIGN_OR_RETURN(grid->world_, CreateNcclWorldCommunicator(watchdog, launch.rank, launch.world_size,
                                                                    grid->device_index_, bootstrap));
      break;
    }
  }

  // The groups, in the same order on every rank. Color: the group's lowest world rank.
  const int rank = launch.rank;
  const Coordinates& c = grid->coords_;
  struct Spec {
    const char* name;
    std::vector<int64_t> members;
    int64_t key;
    std::unique_ptr<Communicator>* out;
  };
  std::vector<Spec> specs = {
      {"tp", topology.GroupOf(Dim::kTensor, rank), c.tp, &grid->tp_},
      {"pp", topology.GroupOf(Dim::kPipeline, rank), c.pp, &grid->pp_},
      {"dp", topology.GroupOf(Dim::kData, rank), c.dp, &grid->dp_},
      {"cp", topology.GroupOf(Dim::kContext, rank), c.cp, &grid->cp_},
      {"model", topology.ModelGroupOf(rank), rank, &grid->model_},
      {"embedding", topology.EmbeddingGroupOf(rank), rank, &grid->embedding_},
  };
  // Without context parallelism the dp x cp group is the dp group (dp_cp() returns it): no split.
  if (topology.dims().cp > 1) {
    const std::vector<int64_t> replicas = topology.ReplicaGroupOf(rank);
    const auto position = std::find(replicas.begin(), replicas.end(), rank) - replicas.begin();
    specs.insert(specs.begin() + 4, Spec{"dp_cp", replicas, position, &grid->dp_cp_});
  }
  for (Spec& s : specs) {
    const int color = s.members.empty() ? -1 : static_cast<int>(s.members.front());
    TS_ASSIGN_OR_RETURN(*s.out, grid->world_->Split(color, static_cast<int>(s.key), s.name));
    // The backend's view of the group must be the topology's.
    std::vector<int> want(s.members.begin(), s.members.end());
    const std::vector<int> got = *s.out ? (*s.out)->world_ranks() : std::vector<int>();
    if (got != want) {
      return absl::InternalError(absl::StrCat("group ", s.name, " of rank ", rank, ": the backend made [",
                                              absl::StrJoin(got, ","), "], the topology says [",
                                              absl::StrJoin(want, ","), "]"));
    }
  }
  return grid;
}

ProcessGrid::~ProcessGrid() = default;

void ProcessGrid::EndStartup() { runtime_->watchdog().EndStartup(); }

int ProcessGrid::PendingSignal() { return Watchdog::PendingSignal(); }

void ProcessGrid::Abort(const absl::Status& status) {
  runtime_->watchdog().Fail(FailureKind::kLocalError, nullptr, std::string(status.message()));
  // Only under a test's on_fatal does Fail return.
  std::fflush(nullptr);
  _exit(runtime_->watchdog().failed() ? 3 : 1);
}

std::string ProcessGrid::LogPrefix() const {
  if (world_size() == 1) return "";
  return absl::StrCat("[rank ", rank(), " ", Coords(coords_, topology_.dims().cp > 1), "]");
}

std::string ProcessGrid::Summary() const {
  const Runtime& rt = *runtime_;
  std::string out = absl::StrCat("launch: ", launch().Describe(), "\n");
  absl::StrAppend(&out, "versions: ", VersionsLine(), "\n");
  absl::StrAppend(
      &out,
      absl::StrFormat("layout: world %d = %s, order %s; backend %s%s; collective timeout %g s "
                      "(start-up %g s)\n",
                      world_size(), topology_.SizesLine(), topology_.order(), BackendName(backend_),
                      device_index_ >= 0 ? absl::StrCat(" on cuda:", device_index_) : std::string(" (cpu)"),
                      rt.options().comm_timeout_s, rt.options().startup_timeout_s));
  absl::StrAppend(&out, topology_.Table());
  return out;
}

std::string VersionsLine() {
  std::vector<std::string> parts = {absl::StrCat("Tessera ", TesseraRevision()),
                                    absl::StrCat("LibTorch ", TORCH_VERSION)};
  const std::string mpi = MpiRuntime::LibraryVersion();
  parts.push_back(mpi.empty() ? "no MPI" : mpi);
  const std::string nccl = NcclVersion();
  parts.push_back(nccl.empty() ? "no NCCL backend" : nccl);
  const std::string cuda = CudaVersion();
  if (!cuda.empty()) parts.push_back(cuda);
  return absl::StrJoin(parts, ", ");
}

absl::Status ConfigureRankLogging(const ProcessGrid& grid, const std::string& run_dir) {
  SetLogPrefix(grid.LogPrefix());
  const std::filesystem::path dir = std::filesystem::path(run_dir) / "logs";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create '", dir.string(), "': ", ec.message()));
  }
  SetLogFile((dir / absl::StrFormat("rank-%05d.log", grid.rank())).string());
  // One console voice: rank 0 prints everything, the others only warnings and errors (their
  // full logs are in their files).
  if (grid.rank() != 0) SetConsoleMinLevel(LogLevel::kWarning);
  return absl::OkStatus();
}

}  // namespace tessera::parallel
