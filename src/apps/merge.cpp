// build/merge --adapter checkpoints/finetune-lora --output checkpoints/merged [--base BASE]
// Folds LoRA adapters into their base: W + (alpha / r) B A for every adapted weight, with NF4
// weights (QLoRA) dequantised first, never added into codes. Writes a full checkpoint (weights
// only, config with lora off) as <output>/step_<N>.h5 plus <output>/latest, usable by --init,
// generate and eval like any other. An --output that already holds checkpoints or a latest file
// (a run directory) is refused.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/cli.h"
#include "train/load.h"
#include "train/options.h"
#include "train/output_dir.h"

int main(int argc, char** argv) {
  using namespace tessera;
  return run_main("merge", [&] {
    cxxopts::Options options("merge", "Fold LoRA adapters into their base checkpoint");
    options.add_options()
        ("output", "directory for the merged checkpoint", cxxopts::value<std::string>())
        ("h,help", "show this help");
    train::add_model_options(options, "adapter");
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    TESSERA_CHECK(args.count("output"), "command line: --output is required");
    const std::string dir = args["output"].as<std::string>();
    train::check_new_checkpoint_dir(dir, "--output");
    train::LoadedModel m = train::load_model(args, "adapter");
    TESSERA_CHECK(m.lora, m.path, " holds no LoRA adapters (nothing to merge)");

    Config cfg = m.config;
    cfg.lora = LoraConfig{};  // the merged model is a plain one
    cfg.checkpoint.init.clear();
    cfg.checkpoint.resume.clear();
    Generator init(0);
    nn::GPT merged(train::model_config(cfg.model, cfg.train), init);
    m.lora->merge_into(merged);

    const std::string name = checkpoint_name(m.step);
    CheckpointData ck;
    ck.model = merged.parameters();
    ck.trainer_ints = {{"step", m.step}};
    ck.config_yaml = to_yaml(cfg);
    train::write_checkpoint_dir(dir, name, ck);
    const std::string& trained = m.config.lora.trainable;  // full tensors trained beside adapters
    std::printf("merged %s (rank %ld, %s%s%s) into %s -> %s\n", m.path.c_str(),
                long(m.config.lora.rank), m.config.lora.targets.c_str(),
                trained.empty() ? "" : "; trained in full: ", trained.c_str(), m.base_path.c_str(),
                (std::filesystem::path(dir) / name).string().c_str());
    return 0;
  });
}
