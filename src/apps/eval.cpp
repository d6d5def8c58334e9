// build/eval --checkpoint checkpoints/tiny [--data 'data/kjv/byte/val_*.bin'] [--batches 20]
//            [--batch-size B] [--base BASE]
// Mean cross-entropy (nats per token) and perplexity of a checkpoint on a token set: by default the
// validation split its config names, read in order from the start, as training's validation does.
// A LoRA checkpoint is evaluated on top of its base (the one it recorded, or --base).
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>

#include "config/cli.h"
#include "train/load.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  using namespace tessera;
  try {
    cxxopts::Options options("eval", "Validation loss of a checkpoint");
    options.add_options()
        ("data", "token shards (glob); default: the checkpoint config's data.val", cxxopts::value<std::string>())
        ("batches", "batches to average (fewer if the data runs out)", cxxopts::value<int64_t>()->default_value("20"))
        ("batch-size", "sequences per batch; default: the config's train.batch_size", cxxopts::value<int64_t>())
        ("h,help", "show this help");
    train::add_model_options(options);
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    train::LoadedModel m = train::load_model(args);
    Config cfg = m.config;
    if (args.count("batch-size")) cfg.train.batch_size = args["batch-size"].as<int64_t>();
    const std::string data = args.count("data") ? args["data"].as<std::string>() : cfg.data.val;
    const int64_t batches = args["batches"].as<int64_t>();
    TESSERA_CHECK(batches > 0, "command line: --batches must be positive, got ", batches);
    const double loss = train::evaluate(*m.model, cfg, data, batches);
    std::printf("%s%s%s: loss %.4f | ppl %.2f (%s, batches of %ld x %ld)\n", m.path.c_str(),
                m.lora ? " on base " : "", m.base_path.c_str(), loss, std::exp(loss), data.c_str(),
                long(cfg.train.batch_size), long(cfg.sequence_length()));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "eval: " << e.what() << std::endl;
    return 1;
  }
}
