// Launch-environment parsing for launch.h: one reader per launcher, then precedence and
// cross-checks. Every error names the variable and the value that is wrong.
#include "parallel/comm/launch.h"

#include <unistd.h>

#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"

namespace tessera::parallel {
namespace {

// Upper bound on an expanded node list: a typo such as node[1-999999999] must not exhaust memory.
constexpr size_t kMaxNodes = 1 << 20;

// An integer variable: nullopt when unset, an error when set but not an integer.
absl::StatusOr<std::optional<int>> IntVar(const EnvLookup& env, const std::string& name) {
  std::optional<std::string> text = env(name);
  if (!text) return std::optional<int>();
  int value;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("launcher variable ", name, "='", *text, "' is not an integer"));
  }
  return std::optional<int>(value);
}

// A rank/size pair that one launcher reports.
struct Source {
  Launcher launcher = Launcher::kNone;
  std::string rank_var, size_var;
  int rank = 0, size = 0;
};

// Reads RANK_VAR and SIZE_VAR; nullopt when neither is set; both must be set, and 0 <= rank < size.
absl::StatusOr<std::optional<Source>> ReadPair(const EnvLookup& env, Launcher launcher,
                                               const std::string& rank_var, const std::string& size_var) {
  TS_ASSIGN_OR_RETURN(std::optional<int> rank, IntVar(env, rank_var));
  TS_ASSIGN_OR_RETURN(std::optional<int> size, IntVar(env, size_var));
  if (!rank && !size) return std::optional<Source>();
  if (!rank || !size) {
    const std::string& set = rank ? rank_var : size_var;
    const std::string& unset = rank ? size_var : rank_var;
    return absl::InvalidArgumentError(absl::StrCat("incomplete ", LauncherName(launcher), " environment: ",
                                                   set, "=", *env(set), " is set but ", unset, " is not"));
  }
  if (*size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("launcher variable ", size_var, "=", *size, ": the world size must be >= 1"));
  }
  if (*rank < 0 || *rank >= *size) {
    return absl::InvalidArgumentError(absl::StrCat("launcher variable ", rank_var, "=", *rank,
                                                   " is not in [0, ", size_var, "=", *size, ")"));
  }
  return std::optional<Source>(Source{launcher, rank_var, size_var, *rank, *size});
}

absl::Status CheckLocal(const LaunchInfo& info, const std::string& rank_var, const std::string& size_var) {
  if (info.local_size >= 0 && (info.local_size < 1 || info.local_size > info.world_size)) {
    return absl::InvalidArgumentError(absl::StrCat("launcher variable ", size_var, "=", info.local_size,
                                                   " is not in [1, world size ", info.world_size, "]"));
  }
  if (info.local_rank >= 0 && info.local_size >= 1 && info.local_rank >= info.local_size) {
    return absl::InvalidArgumentError(absl::StrCat("launcher variable ", rank_var, "=", info.local_rank,
                                                   " is not below ", size_var, "=", info.local_size));
  }
  if (info.local_rank < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("launcher variable ", rank_var, "=", info.local_rank, " is negative"));
  }
  return absl::OkStatus();
}

// Slurm's node list and tasks per node: the step's when srun set them, else the job's.
absl::Status ReadSlurmLayout(const EnvLookup& env, LaunchInfo* info) {
  std::string list_var = "SLURM_STEP_NODELIST";
  std::optional<std::string> list = env(list_var);
  if (!list) list = env(list_var = "SLURM_JOB_NODELIST");
  if (!list) list = env(list_var = "SLURM_NODELIST");
  if (list) {
    auto nodes = ExpandSlurmNodeList(*list);
    if (!nodes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(list_var, "='", *list, "': ", nodes.status().message()));
    }
    info->nodes = *std::move(nodes);
  }
  std::string tasks_var = "SLURM_STEP_TASKS_PER_NODE";
  std::optional<std::string> tasks = env(tasks_var);
  if (!tasks) tasks = env(tasks_var = "SLURM_TASKS_PER_NODE");
  if (tasks) {
    auto counts = ExpandSlurmTasksPerNode(*tasks);
    if (!counts.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tasks_var, "='", *tasks, "': ", counts.status().message()));
    }
    info->tasks_per_node = *std::move(counts);
  }
  if (list && tasks && info->nodes.size() != info->tasks_per_node.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "conflicting Slurm environment: ", list_var, "='", *list, "' names ", info->nodes.size(),
        " nodes but ", tasks_var, "='", *tasks, "' gives tasks for ", info->tasks_per_node.size()));
  }
  if (info->launcher == Launcher::kSlurm && tasks) {
    int64_t total = 0;
    for (int n : info->tasks_per_node) total += n;
    if (total != info->world_size) {
      return absl::InvalidArgumentError(absl::StrCat("conflicting Slurm environment: ", tasks_var, "='",
                                                     *tasks, "' adds up to ", total, " tasks but ",
                                                     info->size_variable, "=", info->world_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LaunchInfo> FromSlurm(const EnvLookup& env, const Source& src) {
  LaunchInfo info;
  info.launcher = Launcher::kSlurm;
  info.rank = src.rank;
  info.world_size = src.size;
  info.rank_variable = src.rank_var;
  info.size_variable = src.size_var;
  TS_ASSIGN_OR_RETURN(std::optional<int> local, IntVar(env, "SLURM_LOCALID"));
  TS_ASSIGN_OR_RETURN(std::optional<int> node, IntVar(env, "SLURM_NODEID"));
  TS_ASSIGN_OR_RETURN(std::optional<int> num_nodes, IntVar(env, "SLURM_STEP_NUM_NODES"));
  if (!num_nodes) {
    TS_ASSIGN_OR_RETURN(num_nodes, IntVar(env, "SLURM_NNODES"));
  }
  info.local_rank = local.value_or(-1);
  info.node_rank = node.value_or(-1);
  TS_RETURN_IF_ERROR(ReadSlurmLayout(env, &info));
  if (!info.tasks_per_node.empty()) {
    info.num_nodes = static_cast<int>(info.tasks_per_node.size());
    if (info.node_rank >= info.num_nodes) {
      return absl::InvalidArgumentError(absl::StrCat("launcher variable SLURM_NODEID=", info.node_rank,
                                                     " is not below the ", info.num_nodes,
                                                     " nodes of the step"));
    }
    if (info.node_rank >= 0) info.local_size = info.tasks_per_node[info.node_rank];
  } else if (num_nodes) {
    info.num_nodes = *num_nodes;
  }
  TS_RETURN_IF_ERROR(CheckLocal(info, "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE"));
  return info;
}

}  // namespace

const char* LauncherName(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone:
      return "single process";
    case Launcher::kOpenMpi:
      return "Open MPI";
    case Launcher::kPmi:
      return "PMI";
    case Launcher::kSlurm:
      return "Slurm";
    case Launcher::kTorchrun:
      return "torchrun-style";
  }
  return "?";
}

std::string LaunchInfo::Describe() const {
  std::string out = absl::StrCat(LauncherName(launcher), ": rank ", rank, " of ", world_size);
  if (local_rank >= 0) {
    absl::StrAppend(&out, " (local ", local_rank);
    if (local_size > 0) absl::StrAppend(&out, " of ", local_size);
    if (node_rank >= 0) absl::StrAppend(&out, ", node ", node_rank);
    if (num_nodes > 0) absl::StrAppend(&out, " of ", num_nodes);
    if (node_rank >= 0 && node_rank < static_cast<int>(nodes.size()))
      absl::StrAppend(&out, " '", nodes[node_rank], "'");
    absl::StrAppend(&out, ")");
  }
  if (!job_id.empty()) absl::StrAppend(&out, ", job ", job_id);
  if (restart_count > 0) absl::StrAppend(&out, ", restart ", restart_count);
  return out;
}

absl::StatusOr<std::vector<std::string>> ExpandSlurmNodeList(std::string_view list_view) {
  // Debian 12's Abseil has its own string_view: work on a std::string.
  const std::string list(list_view);
  std::vector<std::string> out;
  // Split at top-level commas (commas inside brackets separate ranges, not names).
  std::vector<std::string> names;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= list.size(); ++i) {
    const char c = i < list.size() ? list[i] : ',';
    if (c == '[') {
      if (++depth > 1) return absl::InvalidArgumentError("nested '[' in a node list");
    } else if (c == ']') {
      if (--depth < 0) return absl::InvalidArgumentError("']' without '[' in a node list");
    } else if (c == ',' && depth == 0) {
      if (i > start) names.push_back(list.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) return absl::InvalidArgumentError("'[' without ']' in a node list");
  for (const std::string& name : names) {
    // Expand bracket groups left to right: each group multiplies the partial names so far.
    std::vector<std::string> partial = {""};
    size_t pos = 0;
    while (pos < name.size()) {
      const size_t open = name.find('[', pos);
      const std::string literal =
          name.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
      for (std::string& p : partial) p.append(literal);
      if (open == std::string::npos) break;
      const size_t close = name.find(']', open);
      std::vector<std::string> items;
      for (size_t a = open + 1; a <= close;) {
        size_t b = name.find_first_of(",]", a);
        const std::string range = name.substr(a, b - a);
        a = b + 1;
        const size_t dash = range.find('-');
        const std::string lo_text = range.substr(0, dash);
        const std::string hi_text = dash == std::string::npos ? lo_text : range.substr(dash + 1);
        uint64_t lo, hi;
        if (lo_text.empty() || hi_text.empty() || !absl::SimpleAtoi(lo_text, &lo) ||
            !absl::SimpleAtoi(hi_text, &hi) || lo_text.find_first_not_of("0123456789") != lo_text.npos ||
            hi_text.find_first_not_of("0123456789") != hi_text.npos) {
          return absl::InvalidArgumentError(absl::StrCat("'", range, "' is not a number or a range a-b"));
        }
        if (hi < lo) return absl::InvalidArgumentError(absl::StrCat("range '", range, "' runs backwards"));
        if (hi - lo >= kMaxNodes)
          return absl::InvalidArgumentError(absl::StrCat("range '", range, "' is too long"));
        for (uint64_t v = lo; v <= hi; ++v) {
          items.push_back(absl::StrFormat("%0*d", static_cast<int>(lo_text.size()), v));
        }
      }
      std::vector<std::string> next;
      for (const std::string& p : partial) {
        for (const std::string& item : items) next.push_back(p + item);
      }
      if (next.size() > kMaxNodes) return absl::InvalidArgumentError("node list too long");
      partial = std::move(next);
      pos = close + 1;
    }
    for (std::string& p : partial) out.push_back(std::move(p));
    if (out.size() > kMaxNodes) return absl::InvalidArgumentError("node list too long");
  }
  if (out.empty()) return absl::InvalidArgumentError("empty node list");
  return out;
}

absl::StatusOr<std::vector<int>> ExpandSlurmTasksPerNode(std::string_view spec_view) {
  const std::string spec(spec_view);
  std::vector<int> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(start, end - start);
    start = end + 1;
    int tasks, repeat = 1;
    const size_t paren = item.find('(');
    const std::string count_text = item.substr(0, paren);
    if (paren != std::string::npos) {
      // "2(x3)": 2 tasks on each of 3 nodes.
      const std::string rest = item.substr(paren);
      if (rest.size() < 4 || rest.substr(0, 2) != "(x" || rest.back() != ')' ||
          !absl::SimpleAtoi(rest.substr(2, rest.size() - 3), &repeat) || repeat < 1) {
        return absl::InvalidArgumentError(absl::StrCat("'", item, "' is not COUNT or COUNT(xREPEAT)"));
      }
    }
    if (count_text.empty() || !absl::SimpleAtoi(count_text, &tasks) || tasks < 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", item, "' is not COUNT or COUNT(xREPEAT)"));
    }
    if (out.size() + repeat > kMaxNodes) return absl::InvalidArgumentError("too many nodes");
    out.insert(out.end(), repeat, tasks);
  }
  return out;
}

namespace {

// Every other launcher whose variables are present must agree with the chosen one.
absl::Status CheckLaunchersAgree(const Source& chosen, const std::optional<Source>& ompi,
                                 const std::optional<Source>& pmi, const std::optional<Source>& torchrun,
                                 const std::optional<Source>& slurm) {
  // Slurm's variables are skipped under an MPI launcher (mpirun inside an allocation inherits the batch
  // step's, and mpirun's remote daemons are srun tasks with their own SLURM_PROCID), and under torchrun when
  // the sizes differ (then srun started one torchrun per node, an outer layer).
  for (const std::optional<Source>& other : {ompi, pmi, torchrun, slurm}) {
    if (!other || other->launcher == chosen.launcher) continue;
    if (other->launcher == Launcher::kSlurm &&
        (chosen.launcher == Launcher::kOpenMpi || chosen.launcher == Launcher::kPmi ||
         (chosen.launcher == Launcher::kTorchrun && other->size != chosen.size))) {
      continue;
    }
    if (other->rank != chosen.rank || other->size != chosen.size) {
      return absl::InvalidArgumentError(
          absl::StrCat("conflicting launcher environment: ", chosen.rank_var, "=", chosen.rank, " ",
                       chosen.size_var, "=", chosen.size, " (", LauncherName(chosen.launcher), ") but ",
                       other->rank_var, "=", other->rank, " ", other->size_var, "=", other->size, " (",
                       LauncherName(other->launcher), "); unset the stale variables"));
    }
  }
  return absl::OkStatus();
}

// The ranks and local layout from the variables of `chosen`, a launcher other than Slurm itself
// (`slurm`, when present, gives the local layout under srun --mpi=pmi2).
absl::StatusOr<LaunchInfo> FromLauncher(const EnvLookup& env, const Source& chosen,
                                        const std::optional<Source>& slurm) {
  LaunchInfo info;
  info.launcher = chosen.launcher;
  info.rank = chosen.rank;
  info.world_size = chosen.size;
  info.rank_variable = chosen.rank_var;
  info.size_variable = chosen.size_var;
  std::string local_var, local_size_var;
  if (chosen.launcher == Launcher::kOpenMpi) {
    local_var = "OMPI_COMM_WORLD_LOCAL_RANK";
    local_size_var = "OMPI_COMM_WORLD_LOCAL_SIZE";
  } else if (chosen.launcher == Launcher::kTorchrun) {
    local_var = "LOCAL_RANK";
    local_size_var = "LOCAL_WORLD_SIZE";
    TS_ASSIGN_OR_RETURN(std::optional<int> group, IntVar(env, "GROUP_RANK"));
    info.node_rank = group.value_or(-1);
  } else if (slurm && slurm->rank == chosen.rank && slurm->size == chosen.size) {
    // srun --mpi=pmi2 sets both PMI_* and SLURM_*; Slurm then knows the local rank.
    local_var = "SLURM_LOCALID";
    TS_ASSIGN_OR_RETURN(LaunchInfo s, FromSlurm(env, *slurm));
    info.local_size = s.local_size;
    info.node_rank = s.node_rank;
    info.num_nodes = s.num_nodes;
  }
  if (!local_var.empty()) {
    TS_ASSIGN_OR_RETURN(std::optional<int> local, IntVar(env, local_var));
    info.local_rank = local.value_or(-1);
  }
  if (!local_size_var.empty()) {
    TS_ASSIGN_OR_RETURN(std::optional<int> local_size, IntVar(env, local_size_var));
    if (local_size) info.local_size = *local_size;
  }
  TS_RETURN_IF_ERROR(CheckLocal(info, local_var, local_size_var.empty() ? "the local size" : local_size_var));
  if (chosen.launcher != Launcher::kSlurm) {
    // The node list is still useful for messages; its task counts are the allocation's.
    LaunchInfo layout;
    if (ReadSlurmLayout(env, &layout).ok()) info.nodes = layout.nodes;
  }
  return info;
}

// The rendezvous address and port, and the job id (with the restart count) for messages and
// file names.
absl::Status ReadRendezvousAndJob(const EnvLookup& env, LaunchInfo* info) {
  if (std::optional<std::string> addr = env("MASTER_ADDR")) info->master_addr = *addr;
  TS_ASSIGN_OR_RETURN(std::optional<int> port, IntVar(env, "MASTER_PORT"));
  if (port) {
    if (*port < 1 || *port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("launcher variable MASTER_PORT=", *port, " is not a TCP port in [1, 65535]"));
    }
    info->master_port = *port;
  }
  if (std::optional<std::string> run = env("TESSERA_RUN_ID")) {
    info->job_id = *run;
  } else if (std::optional<std::string> job = env("SLURM_JOB_ID")) {
    info->job_id = absl::StrCat("slurm-", *job);
    if (std::optional<std::string> step = env("SLURM_STEP_ID")) absl::StrAppend(&info->job_id, ".", *step);
  } else if (std::optional<std::string> job = env("OMPI_MCA_ess_base_jobid")) {
    info->job_id = absl::StrCat("ompi-", *job);
  } else if (std::optional<std::string> job = env("TORCHELASTIC_RUN_ID")) {
    info->job_id = absl::StrCat("torchrun-", *job);
  }
  TS_ASSIGN_OR_RETURN(std::optional<int> restarts, IntVar(env, "SLURM_RESTART_COUNT"));
  info->restart_count = restarts.value_or(0);
  if (info->restart_count > 0) absl::StrAppend(&info->job_id, ".r", info->restart_count);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LaunchInfo> ParseLaunchEnvironment(const EnvLookup& env) {
  TS_ASSIGN_OR_RETURN(std::optional<Source> ompi,
                      ReadPair(env, Launcher::kOpenMpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"));
  TS_ASSIGN_OR_RETURN(std::optional<Source> pmi, ReadPair(env, Launcher::kPmi, "PMI_RANK", "PMI_SIZE"));
  TS_ASSIGN_OR_RETURN(std::optional<Source> torchrun,
                      ReadPair(env, Launcher::kTorchrun, "RANK", "WORLD_SIZE"));
  // Slurm counts as the launcher only inside an srun step: the batch script itself also has
  // SLURM_PROCID=0 (and SLURM_NTASKS of the whole allocation) but no SLURM_STEP_ID.
  std::optional<Source> slurm;
  const bool in_step = env("SLURM_STEP_ID").has_value() || env("SLURM_STEPID").has_value();
  if (in_step && env("SLURM_PROCID")) {
    std::string size_var = "SLURM_STEP_NUM_TASKS";
    if (!env(size_var)) size_var = env("SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS";
    TS_ASSIGN_OR_RETURN(slurm, ReadPair(env, Launcher::kSlurm, "SLURM_PROCID", size_var));
  }

  // The launcher that started the processes: the most specific set of variables wins.
  // torchrun-style variables come before Slurm's: torchrun sets them per worker, also when it
  // runs as one srun task per node.
  std::optional<Source> chosen = ompi ? ompi : pmi ? pmi : torchrun ? torchrun : slurm;
  if (chosen) TS_RETURN_IF_ERROR(CheckLaunchersAgree(*chosen, ompi, pmi, torchrun, slurm));

  LaunchInfo info;
  if (chosen && chosen->launcher == Launcher::kSlurm) {
    TS_ASSIGN_OR_RETURN(info, FromSlurm(env, *chosen));
  } else if (chosen) {
    TS_ASSIGN_OR_RETURN(info, FromLauncher(env, *chosen, slurm));
  } else {
    info.local_rank = 0;
    info.local_size = 1;
    info.node_rank = 0;
    info.num_nodes = 1;
  }
  TS_RETURN_IF_ERROR(ReadRendezvousAndJob(env, &info));
  return info;
}

absl::StatusOr<LaunchInfo> ParseLaunchEnvironment(const std::map<std::string, std::string>& env) {
  return ParseLaunchEnvironment([&env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

absl::StatusOr<LaunchInfo> LaunchInfoFromEnvironment() {
  return ParseLaunchEnvironment([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace tessera::parallel
