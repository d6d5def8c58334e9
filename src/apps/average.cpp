// build/average --output checkpoints/tiny-avg checkpoints/tiny/step_00001200.h5 ...
// The mean of the weights of two checkpoints or more of one model (train/average.h), written as a
// weights-only checkpoint, <output>/step_<N>.h5 plus <output>/latest with N the newest input's
// step and its config, that eval, generate and --init read like any other. An --output that
// already holds checkpoints or a latest file (a run directory) is refused.
// build/average --ema checkpoints/run --output checkpoints/run-ema writes the moving average of
// the weights that one checkpoint's run kept (train.ema_decay, train/ema.h) the same way.
#include "train/average.h"

#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/retention.h"
#include "config/cli.h"
#include "train/output_dir.h"

int main(int argc, char** argv) {
  using namespace tessera;
  return run_main("average", [&] {
    cxxopts::Options options("average", "Average the weights of checkpoints of one model");
    options.add_options()("checkpoints", "checkpoint files, run directories or .../latest",
                          cxxopts::value<std::vector<std::string>>())(
        "output", "directory for the averaged checkpoint", cxxopts::value<std::string>())(
        "ema",
        "write the moving average of the weights one checkpoint's run kept (train.ema_decay) "
        "instead")("h,help", "show this help");
    options.parse_positional({"checkpoints"});
    options.positional_help("CHECKPOINT CHECKPOINT...");
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    TESSERA_CHECK(args.count("output"), "command line: --output is required");
    TESSERA_CHECK(args.count("checkpoints"),
                  "command line: the checkpoints to average are required");
    const std::string dir = args["output"].as<std::string>();
    train::check_new_checkpoint_dir(dir, "--output");
    const std::vector<std::string> inputs = args["checkpoints"].as<std::vector<std::string>>();
    const bool ema = args.count("ema") > 0;
    TESSERA_CHECK(!ema || inputs.size() == 1, "command line: --ema takes one checkpoint, got ",
                  inputs.size());
    const train::Averaged a =
        ema ? train::ema_checkpoint(inputs[0]) : train::average_checkpoints(inputs);
    const std::string name = checkpoint_name(a.step);
    train::write_checkpoint_dir(dir, name, a.data);
    if (ema) {
      std::printf("the moving average of the weights in %s (step %ld) -> %s\n", a.paths[0].c_str(),
                  long(a.step), (std::filesystem::path(dir) / name).string().c_str());
      return 0;
    }
    std::printf("averaged %zu checkpoints (steps", a.paths.size());
    for (size_t i = 0; i < a.steps.size(); ++i)
      std::printf("%s %ld", i ? "," : "", long(a.steps[i]));
    std::printf(") -> %s\n", (std::filesystem::path(dir) / name).string().c_str());
    return 0;
  });
}
