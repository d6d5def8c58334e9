// What every backend shares: the launch environment, shard ranges, the blocking conveniences, the
// argument checks and make_communicator's choice of backend.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "core/build.h"
#include "distributed/backends.h"

namespace tessera::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Average: return "average";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

Range shard_range(int64_t n, int world, int rank) {
  TESSERA_CHECK(n >= 0, "shard_range: negative size ", n);
  TESSERA_CHECK(world >= 1 && rank >= 0 && rank < world, "shard_range: rank ", rank, " of world ",
                world);
  const int64_t c = (n + world - 1) / world;
  const int64_t begin = std::min(n, int64_t(rank) * c);
  return {begin, std::min(n, begin + c)};
}

// ---- detect_launch -----------------------------------------------------------------------------

namespace {

struct LaunchVars {
  const char* launcher;
  const char* rank;
  const char* size;
  const char* local_rank;
  bool mpi;  // an MPI launcher: it sets these on each process it starts
};
// Priority order. MPI launchers set their variables on every process they start, so those describe
// this process even inside a Slurm allocation (mpirun in an sbatch script, whose SLURM_NTASKS is
// the allocation's). MPICH's and Intel MPI's Hydra (mpiexec) set PMI_RANK, PMI_SIZE and
// MPI_LOCALRANKID. PMIx defines no environment variable for the world size (PMIX_RANK alone does
// not make a launch): Open MPI 5's mpirun sets OMPI_COMM_WORLD_* beside it, and srun --mpi=pmix
// sets SLURM_*. Slurm's variables and RANK/WORLD_SIZE may each describe something else than this
// process: SLURM_PROCID/SLURM_NTASKS the allocation a per-node launcher or a RANK/WORLD_SIZE loop
// runs in (salloc, sbatch), RANK/WORLD_SIZE a shell's leftover exports; see detect_launch.
constexpr LaunchVars kLaunchVars[] = {
    {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", true},
    {"mpiexec", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", true},
    {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", false},
    {"env", "RANK", "WORLD_SIZE", "LOCAL_RANK", false},
};

std::optional<int> env_int(const char* var) {
  const char* s = std::getenv(var);
  if (!s) return std::nullopt;
  const std::string_view v(s);
  int x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  TESSERA_CHECK(!v.empty() && ec == std::errc() && end == v.data() + v.size(), "detect_launch: ",
                var, "='", v, "' is not an integer");
  return x;
}

// LaunchInfo::job for a launch by `launcher`: letters, digits, '.', '_' and '-' only (it becomes
// part of a file name), at most 64 of them.
std::string launch_job(std::string_view launcher) {
  auto get = [](const char* var) -> std::string {
    const char* v = std::getenv(var);
    return v ? v : "";
  };
  std::string job;
  if (launcher == "mpirun") {
    job = get("PMIX_NAMESPACE");
    if (job.empty()) job = get("OMPI_MCA_ess_base_jobid");
  } else if (launcher == "srun") {
    // A requeued job keeps its id and starts its steps at 0 again: the restart count tells the
    // legs apart.
    job = get("SLURM_JOB_ID");
    if (!job.empty() && !get("SLURM_STEP_ID").empty()) job += "." + get("SLURM_STEP_ID");
    if (!job.empty() && !get("SLURM_RESTART_COUNT").empty())
      job += ".r" + get("SLURM_RESTART_COUNT");
  } else if (launcher == "env") {
    job = get("TORCHELASTIC_RUN_ID");
    if (job == "none") job.clear();  // torchrun's default: the same for every launch
    // torchrun restarts its workers under the same run id, counting the restarts.
    if (!job.empty() && !get("TORCHELASTIC_RESTART_COUNT").empty())
      job += ".r" + get("TORCHELASTIC_RESTART_COUNT");
  }
  for (char& c : job)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  return job.substr(0, 64);
}

// One launcher's variables, checked; nullopt when none of them is set.
std::optional<LaunchInfo> read_launch(const LaunchVars& g) {
  const std::optional<int> rank = env_int(g.rank), size = env_int(g.size),
                           local = env_int(g.local_rank);
  if (!rank && !size && !local) return std::nullopt;
  TESSERA_CHECK(rank && size, "detect_launch: ", g.launcher, " launch (", g.rank, ", ", g.size,
                ", ", g.local_rank, ") with ", rank ? g.size : g.rank, " unset");
  TESSERA_CHECK(*size >= 1, "detect_launch: ", g.size, "=", *size, " must be at least 1");
  TESSERA_CHECK(*rank >= 0 && *rank < *size, "detect_launch: ", g.rank, "=", *rank,
                " is not a rank of ", g.size, "=", *size);
  const int lr = local.value_or(*rank);
  TESSERA_CHECK(lr >= 0 && lr < *size, "detect_launch: ", g.local_rank, "=", lr,
                " is not a rank of ", g.size, "=", *size);
  return LaunchInfo{*rank, *size, lr, g.launcher, launch_job(g.launcher)};
}

// "the srun launch (SLURM_PROCID=0, SLURM_NTASKS=1)"
std::string describe(const LaunchVars& g, const LaunchInfo& l) {
  return std::string("the ") + g.launcher + " launch (" + g.rank + "=" + std::to_string(l.rank) +
         ", " + g.size + "=" + std::to_string(l.world) + ")";
}

}  // namespace

std::string launch_variables(const std::string& launcher) {
  for (const LaunchVars& g : kLaunchVars)
    if (launcher == g.launcher) return std::string(g.rank) + "/" + g.size;
  return "no launch variables";
}

LaunchInfo detect_launch() {
  std::vector<std::pair<const LaunchVars*, LaunchInfo>> set;  // in priority order
  for (const LaunchVars& g : kLaunchVars)
    if (std::optional<LaunchInfo> l = read_launch(g)) set.emplace_back(&g, *l);
  if (set.empty()) return {};
  // An MPI launcher's variables describe this process, whatever Slurm's or RANK/WORLD_SIZE say.
  if (set.front().first->mpi) std::erase_if(set, [](const auto& s) { return !s.first->mpi; });
  const bool agree = std::all_of(set.begin(), set.end(), [&](const auto& s) {
    return s.second.world == set.front().second.world;
  });
  if (agree) return set.front().second;
  // They disagree on the world size: one describes the process, the other an allocation or a
  // leftover export. A world of one process is what an allocation's variables say in a shell that
  // starts the ranks itself (SLURM_NTASKS=1 around a RANK/WORLD_SIZE loop or a per-node launcher);
  // taking it would make every rank rank 0 of 1, each writing the same run directory.
  std::vector<std::pair<const LaunchVars*, LaunchInfo>> several;
  for (const auto& s : set)
    if (s.second.world > 1) several.push_back(s);
  if (several.size() == 1) return several.front().second;
  std::string both;
  for (size_t i = 0; i < set.size(); ++i)
    both += (i == 0                ? ""
             : i + 1 == set.size() ? " and "
                                   : ", ") +
            describe(*set[i].first, set[i].second);
  TESSERA_FAIL("detect_launch: ", both,
               " disagree on the world size, so this process's rank is "
               "unknown: unset the variables of the launcher that did not start this process");
}

// ---- shared by the backends --------------------------------------------------------------------

void check_collective_tensor(const Tensor& t, const char* what, bool reduces) {
  TESSERA_CHECK(t.defined(), what, ": undefined tensor");
  // In place: a contiguous copy would be reduced and then dropped, so strided views are refused.
  TESSERA_CHECK(t.is_contiguous(), what, ": ", t.str(),
                " is not contiguous (collectives work in place on a flat buffer)");
  const DType d = t.dtype();
  const bool ok = d == DType::F32 || d == DType::F64 || d == DType::BF16 || d == DType::I32 ||
                  (!reduces && d == DType::U8);
  TESSERA_CHECK(ok, what, ": dtype ", dtype_name(d), " is not supported (f32, f64, bf16, i32",
                reduces ? ")" : ", u8)");
}

std::string describe_collective(const char* what, ReduceOp op, bool reduces, const Tensor& t,
                                int rank, int world) {
  std::ostringstream os;
  os << what;
  if (reduces) os << " (" << reduce_op_name(op) << ")";
  os << " of " << t.numel() << " " << dtype_name(t.dtype()) << " elements on rank " << rank
     << " of " << world;
  return os.str();
}

// ---- the roll call of a timed-out collective -------------------------------------------------

std::string rank_list(const std::vector<int>& ranks) {
  std::vector<int> r = ranks;
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  std::string s = r.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    if (i > 0) s += ", ";
    s += std::to_string(r[i]);
    if (j > i) s += (j == i + 1 ? ", " : "-") + std::to_string(r[j]);
    i = j + 1;
  }
  return s;
}

std::string roll_call_answer(uint64_t number, double waited_s, const std::string& what) {
  std::ostringstream os;
  os << number << " " << std::fixed << std::setprecision(1) << waited_s << " " << what;
  return os.str();
}

namespace {

// describe_collective's text without its rank: "all_reduce (sum) of 7 f32 elements".
std::string collective_kind(const std::string& what) {
  return what.substr(0, what.rfind(" on rank "));
}

}  // namespace

std::string roll_call_report(int rank, uint64_t number, const std::string& what_here,
                             const std::vector<std::optional<std::string>>& answers,
                             double grace_s) {
  std::vector<int> silent, same, garbled;
  std::vector<std::string> elsewhere;  // one sentence per rank in another collective or in none
  std::vector<int> elsewhere_ranks;
  bool reordered = false;  // a rank waits in another collective than this one
  for (int r = 0; r < int(answers.size()); ++r) {
    if (r == rank) continue;
    if (!answers[size_t(r)]) {
      silent.push_back(r);
      continue;
    }
    std::istringstream in(*answers[size_t(r)]);
    uint64_t theirs = 0;
    double waited = 0;
    std::string what;
    if (!(in >> theirs >> waited)) {
      garbled.push_back(r);  // not from this version of tessera
      continue;
    }
    std::getline(in >> std::ws, what);
    if (waited >= 0 && theirs == number && collective_kind(what) == collective_kind(what_here)) {
      same.push_back(r);
      continue;
    }
    reordered = reordered || waited >= 0;
    std::ostringstream os;
    if (waited < 0 && theirs < number)
      os << "rank " << r << " has issued " << theirs
         << " collectives, not this one: it is busy on the host or stuck outside the collectives";
    else if (waited < 0)
      os << "rank " << r << " waits in no collective, having issued " << theirs;
    else
      os << "rank " << r << " has waited " << std::fixed << std::setprecision(1) << waited
         << " s in " << (theirs == number ? "another " : "") << "collective #" << theirs << " ("
         << what << ")";
    elsewhere.push_back(os.str());
    elsewhere_ranks.push_back(r);
  }
  std::ostringstream os;
  os << "Roll call of the other ranks: ";
  std::vector<std::string> parts;
  if (!silent.empty()) {
    std::ostringstream p;
    p << rank_list(silent) << " did not answer within " << grace_s
      << " s (stopped, dead, or busy outside the collectives: a long evaluation, save or step)";
    parts.push_back(p.str());
  }
  if (!same.empty())
    parts.push_back(rank_list(same) + (same.size() == 1 ? " is" : " are") +
                    " waiting in this collective too (#" + std::to_string(number) + ")");
  constexpr size_t kShown = 4;  // sentences; the rest are counted
  for (size_t i = 0; i < elsewhere.size() && i < kShown; ++i) parts.push_back(elsewhere[i]);
  if (elsewhere.size() > kShown)
    parts.push_back(std::to_string(elsewhere.size() - kShown) + " more elsewhere");
  if (!garbled.empty()) parts.push_back(rank_list(garbled) + " answered unreadably");
  for (size_t i = 0; i < parts.size(); ++i) os << (i ? "; " : "") << parts[i];
  if (!elsewhere.empty())
    os << ". This rank is in collective #" << number << " (" << collective_kind(what_here) << ")";
  if (reordered) os << ": the ranks issue collectives in different orders";
  std::vector<int> look = silent;
  look.insert(look.end(), elsewhere_ranks.begin(), elsewhere_ranks.end());
  look.insert(look.end(), garbled.begin(), garbled.end());
  if (!look.empty())
    os << ". Look at " << rank_list(look) << ".";
  else
    os << ". Every rank is waiting in it: the transport between them is stuck (network, shared "
          "memory), not a rank.";
  return os.str();
}

// ---- the blocking conveniences -----------------------------------------------------------------

void Communicator::all_reduce(const Tensor& t, ReduceOp op) { all_reduce_async(t, op)->wait(); }
void Communicator::reduce_scatter(const Tensor& t, ReduceOp op) {
  reduce_scatter_async(t, op)->wait();
}
void Communicator::all_gather(const Tensor& t) { all_gather_async(t)->wait(); }
void Communicator::broadcast(const Tensor& t, int root) { broadcast_async(t, root)->wait(); }

std::vector<double> Communicator::all_reduce_host(std::vector<double> v, ReduceOp op) {
  if (v.empty()) return v;
  const Tensor t = from_vector<double>(v, {int64_t(v.size())}, Options(DType::F64, device()));
  WorkHandle w = all_reduce_async(t, op);
  w->wait();
  // The host reads the values, so it must see the collective finish or fail: NCCL's wait() only
  // orders the compute stream, and a copy behind an aborted collective would return garbage.
  while (!w->test()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  return t.to(Device::cpu()).to_vector<double>();
}

// ---- make_communicator -------------------------------------------------------------------------

std::unique_ptr<Communicator> make_communicator(const CommOptions& options,
                                                const LaunchInfo& launch) {
  TESSERA_CHECK(std::isfinite(options.timeout_s) && options.timeout_s > 0,
                "make_communicator: timeout_s must be positive (got ", options.timeout_s, ")");
  TESSERA_CHECK(launch.world >= 1 && launch.rank >= 0 && launch.rank < launch.world,
                "make_communicator: rank ", launch.rank, " of world ", launch.world);
  init_directory(options.init);  // validates the form early, whichever backend runs
  std::string backend = options.backend;
  if (backend == "auto")
    backend = launch.world == 1 ? "single" : options.device.is_cuda() ? "nccl" : "mpi";

  if (backend == "single") {
    TESSERA_CHECK(launch.world == 1, "backend 'single' runs one process, but the ",
                  launch.launcher, " launch (", launch_variables(launch.launcher), ") has ",
                  launch.world, " ranks: use backend auto, mpi or nccl, or launch one process");
    return make_single_communicator(options, launch);
  }
  if (backend == "mpi") {
    TESSERA_CHECK(options.device.is_cpu(), "backend 'mpi' reduces CPU tensors, but the device is ",
                  options.device.str(), ": use backend nccl for CUDA tensors");
    return make_mpi_communicator(options, launch);
  }
  if (backend == "nccl") {
    if (!built_with::nccl())  // the stub: says how to get NCCL
      return make_nccl_communicator(options, launch, nullptr);
    TESSERA_CHECK(options.device.is_cuda(), "backend 'nccl' reduces CUDA tensors, but the device ",
                  "is ", options.device.str(), ": use backend mpi for CPU tensors");
    std::unique_ptr<Communicator> bootstrap;
    if (launch.world > 1 && options.init.empty()) {
      TESSERA_CHECK(
          (launch.launcher == "mpirun" || launch.launcher == "mpiexec") && built_with::mpi(),
          "backend 'nccl' with ", launch.world, " ranks (", launch.launcher,
          " launch) needs to share an "
          "ncclUniqueId: set init to file:///a/directory/all/ranks/see, or launch with "
          "mpirun in a build with MPI (TESSERA_MPI)");
      CommOptions mpi_options = options;
      mpi_options.backend = "mpi";
      mpi_options.device = Device::cpu();
      bootstrap = make_mpi_communicator(mpi_options, launch);
    }
    return make_nccl_communicator(options, launch, bootstrap.get());
  }
  TESSERA_FAIL("make_communicator: unknown backend '", options.backend,
               "' (auto, single, mpi or nccl)");
}

}  // namespace tessera::dist
