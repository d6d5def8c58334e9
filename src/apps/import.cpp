// build/import DIR --output CKPT_DIR
// Reads a Hugging Face model directory (config.json + model.safetensors or its shards, GPT-2,
// Llama, Qwen3, Mistral, Mixtral or Qwen3-MoE; see train/hf_dir.h) and writes a tessera checkpoint,
// <CKPT_DIR>/step_00000000.h5 plus latest, with the model's weights and a config built from
// config.json (other sections at their defaults). GPT-2 tokenizer files (vocab.json, merges.txt)
// are copied to <CKPT_DIR>/tokenizer under tessera's names (encoder.json, vocab.bpe) and
// data.tokenizer_dir points there; without them, a tokenizer.json (with tokenizer_config.json, if
// there is one) is copied there as it is (data.tokenizer hf). The result works with eval, generate
// and --init like any checkpoint; `train --init hf:DIR` reads DIR directly.
// An --output that already holds checkpoints or a latest file (a run directory) is refused.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/cli.h"
#include "data/tokenizer.h"
#include "nn/hf_names.h"
#include "train/hf_dir.h"
#include "train/options.h"
#include "train/output_dir.h"

int main(int argc, char** argv) {
  using namespace tessera;
  namespace fs = std::filesystem;
  return run_main("import", [&] {
    cxxopts::Options options("import", "Read a Hugging Face model directory into a checkpoint");
    options.add_options()
        ("dir", "the Hugging Face directory", cxxopts::value<std::string>())
        ("output", "directory for the checkpoint", cxxopts::value<std::string>())
        ("h,help", "show this help");
    options.parse_positional({"dir"});
    options.positional_help("DIR");
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    TESSERA_CHECK(args.count("dir"), "command line: the Hugging Face directory is required");
    TESSERA_CHECK(args.count("output"), "command line: --output is required");
    const std::string src = args["dir"].as<std::string>();
    const fs::path out(args["output"].as<std::string>());
    train::check_new_checkpoint_dir(out.string(), "--output");

    train::HFModel hf = train::import_hf(src);
    Config& cfg = hf.config;
    // The tokenizer read now: a broken file is named before anything is written.
    const fs::path dir(src);
    std::unique_ptr<data::Tokenizer> tokenizer;
    std::string files;
    if (hf.gpt2_tokenizer_files) {
      files = (dir / "vocab.json").string() + " and " + (dir / "merges.txt").string();
      tokenizer =
          data::make_gpt2_tokenizer((dir / "vocab.json").string(), (dir / "merges.txt").string());
    }
    if (hf.hf_tokenizer_json) {
      files = (dir / "tokenizer.json").string();
      tokenizer = data::make_hf_tokenizer(src);
    }
    TESSERA_CHECK(!tokenizer || tokenizer->vocab_size() <= cfg.model.vocab_size, files, ": ",
                  tokenizer ? tokenizer->vocab_size() : 0,
                  " tokens, more than the model's vocab_size (", cfg.model.vocab_size, ") in ",
                  (dir / "config.json").string());
    const fs::path file = out / checkpoint_name(0), tok = out / "tokenizer";
    // The tokenizer's files, under the names its tokenizer reads.
    std::vector<std::pair<std::string, std::string>> copies;
    if (hf.gpt2_tokenizer_files)
      copies = {{"vocab.json", "encoder.json"}, {"merges.txt", "vocab.bpe"}};
    if (hf.hf_tokenizer_json) {
      copies = {{"tokenizer.json", "tokenizer.json"}};
      if (fs::exists(dir / "tokenizer_config.json"))
        copies.emplace_back("tokenizer_config.json", "tokenizer_config.json");
    }
    if (!copies.empty()) cfg.data.tokenizer_dir = tok.string();
    cfg.validate();
    CheckpointData ck;
    ck.model = hf.params;
    ck.trainer_ints = {{"step", 0}};
    ck.config_yaml = to_yaml(cfg);
    train::write_checkpoint_dir(out.string(), checkpoint_name(0), ck, [&](auto* made) {
      if (copies.empty()) return;
      if (!fs::exists(tok)) made->push_back(tok);
      fs::create_directories(tok);
      for (const auto& [from, to] : copies) {
        made->push_back(tok / to);
        fs::copy_file(dir / from, tok / to, fs::copy_options::overwrite_existing);
      }
    });
    std::printf("imported %s (%s, %zu tensors) -> %s\n", src.c_str(), hf.architecture.c_str(),
                hf.params.size(), file.string().c_str());
    for (const std::string& n : hf.notes) std::printf("note: %s\n", n.c_str());
    return 0;
  });
}
