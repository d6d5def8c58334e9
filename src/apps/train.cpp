// build/train --config configs/tiny.yaml [--set key=value ...] [--resume auto] [--init PATH]
#include <iostream>

#include "config/cli.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  using namespace tessera;
  try {
    cxxopts::Options options("train", "Train a GPT-style model from a YAML config");
    CommandLine cl = parse_command_line(argc, argv, options);
    if (cl.help) {
      std::cout << options.help() << "\n";
      return 0;
    }
    std::cout << "# resolved config\n" << to_yaml(cl.config) << std::endl;
    train::TrainResult r = train::run_training(cl.config, std::cout);
    std::cout << "done: " << r.steps << " steps, train loss " << r.last_train_loss;
    if (r.last_val_loss >= 0) std::cout << ", val loss " << r.last_val_loss;
    if (!r.last_checkpoint.empty()) std::cout << ", checkpoint " << r.last_checkpoint;
    std::cout << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "train: " << e.what() << std::endl;
    return 1;
  }
}
