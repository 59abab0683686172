// Tests of parallel/launch: each launcher's variables, Slurm's compressed node lists and task
// counts, and the errors for missing, malformed and conflicting values. Environments are maps, so
// nothing is launched.
#include "parallel/comm/launch.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::parallel::CheckSrunMpiWireUp;
using tessera::parallel::ExpandSlurmNodeList;
using tessera::parallel::ExpandSlurmTasksPerNode;
using tessera::parallel::Launcher;
using tessera::parallel::LaunchInfo;
using tessera::parallel::ParseLaunchEnvironment;
using tessera::parallel::SrunMpiWarning;
using Env = std::map<std::string, std::string>;
using Names = std::vector<std::string>;

namespace {

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

}  // namespace

CATCH_TEST_CASE("no launcher: a single process") {
  auto info = ParseLaunchEnvironment(Env{{"HOME", "/root"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kNone);
  CATCH_CHECK(info->rank == 0);
  CATCH_CHECK(info->world_size == 1);
  CATCH_CHECK(info->local_rank == 0);
  CATCH_CHECK_FALSE(info->launched_by_mpi());
}

CATCH_TEST_CASE("Open MPI variables") {
  auto info = ParseLaunchEnvironment(Env{{"OMPI_COMM_WORLD_RANK", "5"},
                                         {"OMPI_COMM_WORLD_SIZE", "8"},
                                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                         {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                         {"OMPI_COMM_WORLD_NODE_RANK", "1"},
                                         {"OMPI_MCA_ess_base_jobid", "4242"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kOpenMpi);
  CATCH_CHECK(info->rank == 5);
  CATCH_CHECK(info->world_size == 8);
  CATCH_CHECK(info->local_rank == 1);
  CATCH_CHECK(info->local_size == 4);
  // OMPI_COMM_WORLD_NODE_RANK is a rank within the node, not the node's index: left to MPI.
  CATCH_CHECK(info->node_rank == -1);
  CATCH_CHECK(info->job_id == "ompi-4242");
  CATCH_CHECK(info->rank_variable == "OMPI_COMM_WORLD_RANK");
  CATCH_CHECK(info->launched_by_mpi());
}

CATCH_TEST_CASE("PMI variables alone leave the local rank to MPI") {
  auto info = ParseLaunchEnvironment(Env{{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kPmi);
  CATCH_CHECK(info->rank == 2);
  CATCH_CHECK(info->world_size == 3);
  CATCH_CHECK(info->local_rank == -1);
  CATCH_CHECK(info->launched_by_mpi());
}

CATCH_TEST_CASE("srun --mpi=pmi2: PMI and Slurm agree, Slurm gives the node layout") {
  auto info = ParseLaunchEnvironment(Env{{"PMI_RANK", "6"},
                                         {"PMI_SIZE", "7"},
                                         {"SLURM_PROCID", "6"},
                                         {"SLURM_NTASKS", "7"},
                                         {"SLURM_STEP_ID", "0"},
                                         {"SLURM_LOCALID", "0"},
                                         {"SLURM_NODEID", "3"},
                                         {"SLURM_JOB_ID", "991"},
                                         {"SLURM_STEP_NODELIST", "node[01-03,07]"},
                                         {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kPmi);
  CATCH_CHECK(info->local_rank == 0);
  CATCH_CHECK(info->local_size == 1);
  CATCH_CHECK(info->node_rank == 3);
  CATCH_CHECK(info->num_nodes == 4);
  CATCH_CHECK(info->nodes == Names{"node01", "node02", "node03", "node07"});
  CATCH_CHECK(info->job_id == "slurm-991.0");
}

CATCH_TEST_CASE("Slurm srun task: rank, local rank, node and node list") {
  Env env = {{"SLURM_PROCID", "5"},
             {"SLURM_NTASKS", "7"},
             {"SLURM_STEP_ID", "2"},
             {"SLURM_LOCALID", "1"},
             {"SLURM_NODEID", "2"},
             {"SLURM_JOB_ID", "12345"},
             {"SLURM_RESTART_COUNT", "1"},
             {"SLURM_JOB_NODELIST", "node[01-04,07]"},
             {"SLURM_STEP_NODELIST", "node[01-03,07]"},
             {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"},
             {"MASTER_ADDR", "node01"},
             {"MASTER_PORT", "29500"}};
  auto info = ParseLaunchEnvironment(env);
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kSlurm);
  CATCH_CHECK(info->rank == 5);
  CATCH_CHECK(info->world_size == 7);
  CATCH_CHECK(info->local_rank == 1);
  CATCH_CHECK(info->local_size == 2);
  CATCH_CHECK(info->node_rank == 2);
  CATCH_CHECK(info->num_nodes == 4);
  // The step's list wins over the job's.
  CATCH_CHECK(info->nodes == Names{"node01", "node02", "node03", "node07"});
  CATCH_CHECK(info->tasks_per_node == std::vector<int>{2, 2, 2, 1});
  CATCH_CHECK(info->master_addr == "node01");
  CATCH_CHECK(info->master_port == 29500);
  CATCH_CHECK(info->job_id == "slurm-12345.2.r1");
  CATCH_CHECK(info->restart_count == 1);
  CATCH_CHECK_FALSE(info->launched_by_mpi());
  CATCH_CHECK(info->Describe() ==
              "Slurm: rank 5 of 7 (local 1 of 2, node 2 of 4 'node03'), job slurm-12345.2.r1, restart 1");
}

CATCH_TEST_CASE("an srun step without an MPI plugin is refused before MPI_Init, naming --mpi=pmix") {
  // What srun sets for each --mpi plugin (Slurm 22.05, seen on a real step): none sets nothing,
  // pmi2 sets PMI_FD, PMI_JOBID, PMI_RANK, PMI_SIZE, pmix sets PMIX_RANK, PMIX_NAMESPACE, ...
  const Env step = {{"SLURM_PROCID", "1"},
                    {"SLURM_NTASKS", "2"},
                    {"SLURM_STEP_ID", "0"},
                    {"SLURM_LOCALID", "1"},
                    {"SLURM_NODEID", "0"},
                    {"SLURM_JOB_ID", "40"},
                    {"SLURM_STEP_TASKS_PER_NODE", "2"}};
  auto plain = ParseLaunchEnvironment(step);
  CATCH_REQUIRE(plain.ok());
  CATCH_CHECK(plain->srun_step);
  CATCH_CHECK_FALSE(plain->has_pmix);
  const absl::Status refused = CheckSrunMpiWireUp(*plain);
  CATCH_CHECK(refused.code() == absl::StatusCode::kInvalidArgument);  // exit code 2
  CATCH_CHECK(Contains(refused, "srun started these 2 tasks without an MPI plugin (SLURM_MPI_TYPE is unset"));
  CATCH_CHECK(Contains(refused, "srun --mpi=pmix"));
  CATCH_CHECK(Contains(refused, "TESSERA_SRUN_MPI=pmix"));

  Env none = step;
  none["SLURM_MPI_TYPE"] = "none";
  CATCH_CHECK(Contains(CheckSrunMpiWireUp(*ParseLaunchEnvironment(none)), "(SLURM_MPI_TYPE=none,"));

  Env pmix = step;
  pmix["SLURM_MPI_TYPE"] = "pmix";
  pmix["PMIX_RANK"] = "1";
  pmix["PMIX_NAMESPACE"] = "slurm.pmix.40.0";
  auto with_pmix = ParseLaunchEnvironment(pmix);
  CATCH_REQUIRE(with_pmix.ok());
  CATCH_CHECK(with_pmix->launcher == Launcher::kSlurm);
  CATCH_CHECK(with_pmix->has_pmix);
  CATCH_CHECK(CheckSrunMpiWireUp(*with_pmix).ok());
  CATCH_CHECK(SrunMpiWarning(*with_pmix, "Open MPI v4.1.4, package: Debian OpenMPI").empty());

  Env pmi2 = step;
  pmi2["SLURM_MPI_TYPE"] = "pmi2";
  pmi2["PMI_FD"] = "11";
  pmi2["PMI_RANK"] = "1";
  pmi2["PMI_SIZE"] = "2";
  auto with_pmi2 = ParseLaunchEnvironment(pmi2);
  CATCH_REQUIRE(with_pmi2.ok());
  CATCH_CHECK(with_pmi2->launcher == Launcher::kPmi);
  CATCH_CHECK(CheckSrunMpiWireUp(*with_pmi2).ok());
  // Open MPI may not speak PMI-2: a warning before MPI_Init; MPICH does.
  const std::string warning = SrunMpiWarning(*with_pmi2, "Open MPI v4.1.4, package: Debian OpenMPI");
  CATCH_CHECK(warning.find("srun --mpi=pmix") != std::string::npos);
  CATCH_CHECK(SrunMpiWarning(*with_pmi2, "MPICH Version: 4.0.2").empty());

  // mpirun inside an allocation: its ranks carry the step variables of mpirun's daemons.
  Env mpirun = step;
  mpirun["OMPI_COMM_WORLD_RANK"] = "1";
  mpirun["OMPI_COMM_WORLD_SIZE"] = "2";
  CATCH_CHECK(CheckSrunMpiWireUp(*ParseLaunchEnvironment(mpirun)).ok());
  // No launcher, and the batch script itself: nothing to check.
  CATCH_CHECK(CheckSrunMpiWireUp(*ParseLaunchEnvironment(Env{})).ok());
  CATCH_CHECK(CheckSrunMpiWireUp(*ParseLaunchEnvironment(Env{
                                     {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_ID", "7"}}))
                  .ok());
}

CATCH_TEST_CASE("Slurm's batch script (no step) is not an srun task") {
  // sbatch runs the script with SLURM_PROCID=0 and the allocation's SLURM_NTASKS: running
  // tessera there directly is one process, not rank 0 of 8 waiting for 7 others.
  auto info =
      ParseLaunchEnvironment(Env{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_ID", "7"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kNone);
  CATCH_CHECK(info->world_size == 1);
}

CATCH_TEST_CASE("mpirun inside a Slurm allocation: MPI wins, the batch step's Slurm values are ignored") {
  auto info = ParseLaunchEnvironment(Env{{"OMPI_COMM_WORLD_RANK", "3"},
                                         {"OMPI_COMM_WORLD_SIZE", "16"},
                                         {"SLURM_PROCID", "0"},
                                         {"SLURM_NTASKS", "16"},
                                         {"SLURM_STEP_ID", "0"},
                                         {"SLURM_JOB_NODELIST", "gpu[1-4]"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kOpenMpi);
  CATCH_CHECK(info->rank == 3);
  CATCH_CHECK(info->nodes == Names{"gpu1", "gpu2", "gpu3", "gpu4"});
}

CATCH_TEST_CASE("torchrun-style variables") {
  auto info = ParseLaunchEnvironment(Env{{"RANK", "9"},
                                         {"WORLD_SIZE", "16"},
                                         {"LOCAL_RANK", "1"},
                                         {"LOCAL_WORLD_SIZE", "8"},
                                         {"GROUP_RANK", "1"},
                                         {"MASTER_ADDR", "10.0.0.1"},
                                         {"MASTER_PORT", "29400"},
                                         {"TORCHELASTIC_RUN_ID", "abc"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kTorchrun);
  CATCH_CHECK(info->rank == 9);
  CATCH_CHECK(info->world_size == 16);
  CATCH_CHECK(info->local_rank == 1);
  CATCH_CHECK(info->local_size == 8);
  CATCH_CHECK(info->node_rank == 1);
  CATCH_CHECK(info->master_addr == "10.0.0.1");
  CATCH_CHECK(info->master_port == 29400);
  CATCH_CHECK(info->job_id == "torchrun-abc");
}

CATCH_TEST_CASE("torchrun under srun with one task per node: Slurm is the outer layer") {
  auto info = ParseLaunchEnvironment(Env{{"RANK", "9"},
                                         {"WORLD_SIZE", "16"},
                                         {"LOCAL_RANK", "1"},
                                         {"SLURM_PROCID", "1"},
                                         {"SLURM_NTASKS", "2"},
                                         {"SLURM_STEP_ID", "0"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->launcher == Launcher::kTorchrun);
  CATCH_CHECK(info->rank == 9);
}

CATCH_TEST_CASE("TESSERA_RUN_ID names the job") {
  auto info = ParseLaunchEnvironment(Env{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"TESSERA_RUN_ID", "sweep-17"}});
  CATCH_REQUIRE(info.ok());
  CATCH_CHECK(info->job_id == "sweep-17");
}

CATCH_TEST_CASE("missing, malformed and conflicting launcher variables are errors that name them") {
  auto missing = ParseLaunchEnvironment(Env{{"RANK", "3"}});
  CATCH_REQUIRE_FALSE(missing.ok());
  CATCH_CHECK(Contains(missing.status(), "RANK=3 is set but WORLD_SIZE is not"));

  auto missing_ompi = ParseLaunchEnvironment(Env{{"OMPI_COMM_WORLD_SIZE", "4"}});
  CATCH_REQUIRE_FALSE(missing_ompi.ok());
  CATCH_CHECK(
      Contains(missing_ompi.status(), "OMPI_COMM_WORLD_SIZE=4 is set but OMPI_COMM_WORLD_RANK is not"));

  auto text = ParseLaunchEnvironment(Env{{"RANK", "x1"}, {"WORLD_SIZE", "2"}});
  CATCH_REQUIRE_FALSE(text.ok());
  CATCH_CHECK(Contains(text.status(), "RANK='x1' is not an integer"));

  auto range = ParseLaunchEnvironment(Env{{"PMI_RANK", "4"}, {"PMI_SIZE", "4"}});
  CATCH_REQUIRE_FALSE(range.ok());
  CATCH_CHECK(Contains(range.status(), "PMI_RANK=4 is not in [0, PMI_SIZE=4)"));

  auto zero = ParseLaunchEnvironment(Env{{"RANK", "0"}, {"WORLD_SIZE", "0"}});
  CATCH_REQUIRE_FALSE(zero.ok());
  CATCH_CHECK(Contains(zero.status(), "WORLD_SIZE=0"));

  auto conflict = ParseLaunchEnvironment(
      Env{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"RANK", "0"}, {"WORLD_SIZE", "4"}});
  CATCH_REQUIRE_FALSE(conflict.ok());
  CATCH_CHECK(Contains(conflict.status(), "conflicting launcher environment: OMPI_COMM_WORLD_RANK=2"));
  CATCH_CHECK(Contains(conflict.status(), "RANK=0 WORLD_SIZE=4 (torchrun-style)"));

  auto stale = ParseLaunchEnvironment(Env{{"SLURM_PROCID", "3"},
                                          {"SLURM_NTASKS", "4"},
                                          {"SLURM_STEP_ID", "0"},
                                          {"RANK", "0"},
                                          {"WORLD_SIZE", "4"}});
  CATCH_REQUIRE_FALSE(stale.ok());
  CATCH_CHECK(Contains(stale.status(), "SLURM_PROCID=3"));

  auto local = ParseLaunchEnvironment(Env{{"OMPI_COMM_WORLD_RANK", "0"},
                                          {"OMPI_COMM_WORLD_SIZE", "4"},
                                          {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  CATCH_REQUIRE_FALSE(local.ok());
  CATCH_CHECK(
      Contains(local.status(), "OMPI_COMM_WORLD_LOCAL_RANK=2 is not below OMPI_COMM_WORLD_LOCAL_SIZE=2"));

  auto port = ParseLaunchEnvironment(Env{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
  CATCH_REQUIRE_FALSE(port.ok());
  CATCH_CHECK(Contains(port.status(), "MASTER_PORT=70000 is not a TCP port"));

  auto tasks = ParseLaunchEnvironment(Env{{"SLURM_PROCID", "0"},
                                          {"SLURM_NTASKS", "8"},
                                          {"SLURM_STEP_ID", "0"},
                                          {"SLURM_STEP_NODELIST", "n[1-4]"},
                                          {"SLURM_STEP_TASKS_PER_NODE", "2(x3)"}});
  CATCH_REQUIRE_FALSE(tasks.ok());
  CATCH_CHECK(
      Contains(tasks.status(), "names 4 nodes but SLURM_STEP_TASKS_PER_NODE='2(x3)' gives tasks for 3"));

  auto sum = ParseLaunchEnvironment(Env{{"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "8"},
                                        {"SLURM_STEP_ID", "0"},
                                        {"SLURM_STEP_TASKS_PER_NODE", "2(x3)"}});
  CATCH_REQUIRE_FALSE(sum.ok());
  CATCH_CHECK(Contains(sum.status(), "adds up to 6 tasks but SLURM_NTASKS=8"));

  auto list = ParseLaunchEnvironment(Env{{"SLURM_PROCID", "0"},
                                         {"SLURM_NTASKS", "1"},
                                         {"SLURM_STEP_ID", "0"},
                                         {"SLURM_STEP_NODELIST", "node[3-1]"}});
  CATCH_REQUIRE_FALSE(list.ok());
  CATCH_CHECK(Contains(list.status(), "SLURM_STEP_NODELIST='node[3-1]': range '3-1' runs backwards"));
}

CATCH_TEST_CASE("Slurm node lists expand like scontrol show hostnames") {
  CATCH_CHECK(*ExpandSlurmNodeList("node[01-04,07]") ==
              Names{"node01", "node02", "node03", "node04", "node07"});
  CATCH_CHECK(*ExpandSlurmNodeList("a1,b[9-11],c") == Names{"a1", "b9", "b10", "b11", "c"});
  CATCH_CHECK(*ExpandSlurmNodeList("gpu-[008-010]-ib") == Names{"gpu-008-ib", "gpu-009-ib", "gpu-010-ib"});
  CATCH_CHECK(*ExpandSlurmNodeList("r[1-2]n[1-2]") == Names{"r1n1", "r1n2", "r2n1", "r2n2"});
  CATCH_CHECK(*ExpandSlurmNodeList("solo") == Names{"solo"});
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("node[1-").ok());
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("node]1[").ok());
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("node[a-b]").ok());
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("node[]").ok());
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("node[1-99999999]").ok());
  CATCH_CHECK_FALSE(ExpandSlurmNodeList("").ok());
}

CATCH_TEST_CASE("Slurm tasks per node expand repeat counts") {
  CATCH_CHECK(*ExpandSlurmTasksPerNode("2(x3),1") == std::vector<int>{2, 2, 2, 1});
  CATCH_CHECK(*ExpandSlurmTasksPerNode("8") == std::vector<int>{8});
  CATCH_CHECK(*ExpandSlurmTasksPerNode("4(x2)") == std::vector<int>{4, 4});
  CATCH_CHECK_FALSE(ExpandSlurmTasksPerNode("2(3)").ok());
  CATCH_CHECK_FALSE(ExpandSlurmTasksPerNode("2(x0)").ok());
  CATCH_CHECK_FALSE(ExpandSlurmTasksPerNode("x").ok());
  CATCH_CHECK_FALSE(ExpandSlurmTasksPerNode("").ok());
}
