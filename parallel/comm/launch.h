// Who launched this process and where it sits: rank, world size, local rank and node, read from
// the launcher's environment (Open MPI's mpirun, a PMI launcher such as MPICH's or srun
// --mpi=pmi2, Slurm's srun, a torchrun-style launcher) or, with none of them, a single process.
// Parsing is pure (it takes the environment as a lookup function), so every launcher's variables,
// Slurm's compressed node lists and conflicting or missing values are tested without launching
// anything. docs/launch.md describes the precedence rules.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel {

enum class Launcher { kNone, kOpenMpi, kPmi, kSlurm, kTorchrun };
const char* LauncherName(Launcher launcher);

struct LaunchInfo {
  Launcher launcher = Launcher::kNone;
  int rank = 0;
  int world_size = 1;
  // -1 where the launcher does not say (PMI alone, or Open MPI's node index): the runtime then
  // finds them from MPI's shared-memory split.
  int local_rank = -1;
  int local_size = -1;
  int node_rank = -1;
  int num_nodes = -1;
  // Slurm's expanded SLURM_STEP_NODELIST / SLURM_JOB_NODELIST and SLURM_(STEP_)TASKS_PER_NODE.
  std::vector<std::string> nodes;
  std::vector<int> tasks_per_node;
  // torchrun-style rendezvous address (MASTER_ADDR, MASTER_PORT); empty / 0 when unset.
  std::string master_addr;
  int master_port = 0;
  // Identifies one launch, so that a rendezvous never mixes two jobs: TESSERA_RUN_ID if set, else
  // SLURM_JOB_ID plus step and restart count, else Open MPI's or torchrun's job id, else "".
  std::string job_id;
  int restart_count = 0;
  // The variables rank and world size came from, for messages ("OMPI_COMM_WORLD_SIZE").
  std::string rank_variable;
  std::string size_variable;
  // Inside an srun step (SLURM_STEP_ID set), whatever the launcher: the MPI plugin srun was given
  // (SLURM_MPI_TYPE, "" when unset) and whether the plugin's variables are there: PMIx's
  // (srun --mpi=pmix: PMIX_RANK, PMIX_NAMESPACE) or PMI's (--mpi=pmi2: PMI_FD, PMI_RANK).
  bool srun_step = false;
  std::string srun_mpi_type;
  bool has_pmix = false;
  bool has_pmi = false;

  // True when the processes were started by an MPI launcher, so MPI_Init can join them.
  bool launched_by_mpi() const { return launcher == Launcher::kOpenMpi || launcher == Launcher::kPmi; }
  // "Open MPI: rank 3 of 8 (local 1 of 2, node 1 of 4)".
  std::string Describe() const;
};

// Returns the value of an environment variable, or nullopt when it is not set.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads the launcher's variables. Precedence: Open MPI, PMI, Slurm (an srun task: SLURM_PROCID and
// SLURM_STEP_ID), torchrun-style RANK/WORLD_SIZE, else a single process. Every other launcher
// whose variables are present must agree on rank and world size (Slurm's are ignored under an MPI
// launcher: mpirun inside an allocation inherits the batch step's SLURM_PROCID). Errors name the
// variable and its value.
absl::StatusOr<LaunchInfo> ParseLaunchEnvironment(const EnvLookup& env);
absl::StatusOr<LaunchInfo> ParseLaunchEnvironment(const std::map<std::string, std::string>& env);
// The process's own environment.
absl::StatusOr<LaunchInfo> LaunchInfoFromEnvironment();

// Whether MPI_Init can join the processes of `launch`, decided before it is called. A process
// that srun started learns its MPI rank from srun's MPI plugin; without the plugin's variables
// (plain srun where the cluster's MpiDefault is none) Open MPI aborts inside MPI_Init with a
// message about how it was built. That case returns InvalidArgument naming the srun option to
// use; every other launch is OK.
absl::Status CheckSrunMpiWireUp(const LaunchInfo& launch);
// A warning, or "", for the combination that may still fail inside MPI_Init: PMI-2 variables
// without PMIx ones (srun --mpi=pmi2) and Open MPI as `mpi_library` (MpiRuntime::LibraryVersion),
// which speaks PMI-2 only when built --with-pmi (Debian's is not; Open MPI 5 never does).
std::string SrunMpiWarning(const LaunchInfo& launch, const std::string& mpi_library);

// "node[01-04,07],gpu5" -> node01 node02 node03 node04 node07 gpu5. Zero padding follows the
// range's first number; several bracket groups in one name expand as a product, leftmost slowest.
absl::StatusOr<std::vector<std::string>> ExpandSlurmNodeList(std::string_view list);
// "2(x3),1" -> 2 2 2 1.
absl::StatusOr<std::vector<int>> ExpandSlurmTasksPerNode(std::string_view spec);

}  // namespace tessera::parallel
