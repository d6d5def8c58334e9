// Starting build/train under mpirun for the tests of tests/multirank: one command for every rank,
// or one app context per rank (its own working directory: a node of its own, with its own disk).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace tessera::testing {

inline const std::string kTrain = bin_dir() + "/train";

// OpenMPI's session directory for this process's mpiruns, its own: two mpiruns of tests that ctest
// runs side by side would otherwise create the one default (/tmp/ompi.<host>.<uid>) at once, and
// the loser fails in orte_init ("File exists"). Removed when the process ends.
inline const std::filesystem::path& ompi_tmpdir() {
  struct Dir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("tessera-ompi-" + std::to_string(::getpid()));
    Dir() { std::filesystem::create_directories(path); }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

// mpirun and its options, for a command line that names the processes after it.
inline std::string mpirun_command() {
  return std::string(TESSERA_MPIEXEC) +
         " --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none --mca "
         "orte_tmpdir_base " +
         ompi_tmpdir().string() + " -x OMP_NUM_THREADS=1";
}

inline int run_logged(std::string cmd, const std::filesystem::path& log) {
  cmd += " >> " + log.string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Runs `mpirun -np N train --config cfg args...` with output to log; returns the exit status.
inline int mpirun(int np, const std::filesystem::path& cfg, const std::vector<std::string>& args,
                  const std::filesystem::path& log) {
  std::string cmd =
      mpirun_command() + " -np " + std::to_string(np) + " " + kTrain + " --config " + cfg.string();
  for (const std::string& a : args) cmd += " " + a;
  return run_logged(cmd, log);
}

// One rank of a job whose ranks are started each their own way: its working directory and train's
// arguments.
struct RankLaunch {
  std::filesystem::path wdir;
  std::vector<std::string> args;
};
// mpirun with one app context per rank, in rank order (`-np 1 -wdir D train ... : ...`).
inline int mpirun_each(const std::vector<RankLaunch>& ranks, const std::filesystem::path& log) {
  std::string cmd = mpirun_command();
  for (size_t r = 0; r < ranks.size(); ++r) {
    cmd += (r ? " : " : " ") + std::string("-np 1 -wdir ") + ranks[r].wdir.string() + " " + kTrain;
    for (const std::string& a : ranks[r].args) cmd += " " + a;
  }
  return run_logged(cmd, log);
}

inline std::string read(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace tessera::testing
