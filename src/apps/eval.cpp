// build/eval --checkpoint checkpoints/tiny [--data 'data/kjv/byte/val_*.bin'] [--batches 20]
//            [--batch-size B] [--base BASE] [--contexts 128,256,512,1024]
// Mean cross-entropy (nats per token) and perplexity of a checkpoint on a token set: by default the
// validation split its config names, read in order from the start, as training's validation does.
// A LoRA checkpoint is evaluated on top of its base (the one it recorded, or --base).
// --contexts evaluates windows of each length, also past the length the model trained on (RoPE and
// stick-breaking models can run them; learned positions stop at block_size): the batch shrinks so
// every context reads about the same number of tokens, the first batches x B x T of the data.
#include <algorithm>
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
        ("contexts", "comma-separated context lengths to evaluate, e.g. 128,256,512", cxxopts::value<std::string>())
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
    if (args.count("contexts")) {
      const std::vector<int64_t> contexts = parse_step_list(args["contexts"].as<std::string>());
      TESSERA_CHECK(!contexts.empty(), "command line: --contexts names no length");
      const int64_t tokens = cfg.train.batch_size * cfg.sequence_length();  // per batch
      std::printf("%s%s%s on %s (%ld batches of ~%ld tokens; trained at %ld)\n", m.path.c_str(),
                  m.lora ? " on base " : "", m.base_path.c_str(), data.c_str(), long(batches),
                  long(tokens), long(cfg.sequence_length()));
      std::printf("%10s %10s %10s\n", "context", "loss", "ppl");
      for (int64_t T : contexts) {
        TESSERA_CHECK(T > 0, "command line: --contexts: a length must be positive, got ", T);
        if (cfg.model.position == "learned" && T > cfg.model.block_size) {
          std::printf("%10ld %10s %10s   (learned positions end at %ld)\n", long(T), "-", "-",
                      long(cfg.model.block_size));
          continue;
        }
        Config at = cfg;
        at.model.block_size = std::max(T, cfg.model.block_size);  // the loader's limit only
        at.train.seq_len = T;
        at.train.batch_size = std::max<int64_t>(1, tokens / T);
        const double loss = train::evaluate(*m.model, at, data, batches);
        std::printf("%10ld %10.4f %10.2f\n", long(T), loss, std::exp(loss));
      }
      return 0;
    }
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
