// build/train --config configs/tiny.yaml [--set key=value ...] [--resume auto] [--init PATH]
// mpirun -np 8 build/train --config configs/gpt2-124m.yaml     (srun too: src/distributed/)
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <string>

#include "config/cli.h"
#include "distributed/communicator.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  using namespace tessera;
  int rank = 0, world = 1;
  std::signal(SIGXFSZ, SIG_IGN);  // as run_main (config/cli.h): a write past ulimit -f is named
  try {
    const dist::LaunchInfo launch = dist::detect_launch();
    rank = launch.rank, world = launch.world;
    cxxopts::Options options("train", "Train a GPT-style model from a YAML config");
    CommandLine cl = parse_command_line(argc, argv, options);
    if (cl.help) {
      if (rank == 0) std::cout << options.help() << "\n";
      return 0;
    }
    if (rank == 0) std::cout << "# resolved config\n" << to_yaml(cl.config) << std::endl;
    train::TrainResult r = train::run_training(cl.config, std::cout);
    // Stopped by a signal after saving (train/stop_signals.h): the status of a process the signal
    // ended, so a job script sees it, on every rank.
    const int status = r.stop_signal ? 128 + r.stop_signal : 0;
    if (rank != 0) return status;
    std::cout << (r.stop_signal ? "stopped: " : "done: ") << r.steps << " steps";
    if (r.last_train_loss >= 0) std::cout << ", train loss " << r.last_train_loss;
    if (r.last_val_loss >= 0) std::cout << ", val loss " << r.last_val_loss;
    if (!r.last_checkpoint.empty()) std::cout << ", checkpoint " << r.last_checkpoint;
    std::cout << std::endl;
    return status;
  } catch (const std::exception& e) {
    if (world == 1) {
      std::cerr << "train: " << e.what() << std::endl;
      return 1;
    }
    // One write: the ranks' lines would otherwise interleave mid-line on a shared stderr.
    const std::string line = "train (rank " + std::to_string(rank) + " of " +
                             std::to_string(world) + "): " + e.what() + "\n";
    std::cerr.write(line.data(), std::streamsize(line.size())).flush();
    // Leave without the exit handlers (an MPI_Finalize would wait for ranks that may be stuck in a
    // collective): the launcher sees the failure and stops the other ranks.
    std::cout.flush();
    _exit(1);
  }
}
