// build/export --checkpoint CKPT --output DIR [--base BASE] [--reference-logits FILE]
// Writes a Hugging Face model directory (config.json, model.safetensors, generation_config.json,
// and the GPT-2 tokenizer's vocab.json + merges.txt when the model uses it) that transformers'
// from_pretrained loads; train/hf_dir.h says what maps to what and what is refused. A LoRA
// checkpoint exports with its adapters merged into the base (as build/merge would).
// --reference-logits FILE also writes, outside DIR, a safetensors file holding fixed input tokens
// ("tokens", (2, T) i32) and tessera's logits for them ("logits", (2, T, V) f32), which
// scripts/hf_logits.py compares against an independent PyTorch model loaded from DIR. It is written
// first as FILE.partial-<pid> and renamed once DIR is in place: a failure leaves neither. FILE must not
// exist, as DIR must not (or be empty).
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>

#include "autograd/autograd.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "config/cli.h"
#include "nn/hf_names.h"
#include "train/hf_dir.h"
#include "train/load.h"
#include "train/options.h"
#include "train/output_dir.h"

int main(int argc, char** argv) {
  using namespace tessera;
  namespace fs = std::filesystem;
  return run_main("export", [&] {
    cxxopts::Options options("export", "Write a checkpoint as a Hugging Face model directory");
    options.add_options()
        ("output", "the directory to write (must not exist, or be empty)",
         cxxopts::value<std::string>())
        ("reference-logits", "also write tessera's logits for fixed tokens to this new file",
         cxxopts::value<std::string>()->default_value(""))
        ("h,help", "show this help");
    train::add_model_options(options);
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    TESSERA_CHECK(args.count("output"), "command line: --output is required");
    const std::string dir = args["output"].as<std::string>();
    const std::string ref = args["reference-logits"].as<std::string>();
    if (!ref.empty()) {
      // First the rule that holds whether or not --output exists yet: the file goes beside the
      // model directory, never into it (the directory is written under another name and renamed).
      // Compared as absolute, normal paths: hf, ./hf/ and /abs/hf name one directory (the empty
      // last element a trailing / leaves is dropped).
      auto normal = [](const std::string& p) {
        const fs::path c = fs::weakly_canonical(fs::absolute(p)).lexically_normal();
        return c.has_filename() ? c : c.parent_path();
      };
      const fs::path d = normal(dir), r = normal(ref);
      TESSERA_CHECK(std::mismatch(d.begin(), d.end(), r.begin(), r.end()).first != d.end(),
                    "--reference-logits ", ref, " lies inside --output ", dir,
                    "; it must be written outside it (nothing was written)");
      const fs::path parent = fs::path(ref).parent_path().empty() ? fs::path(".")
                                                                  : fs::path(ref).parent_path();
      TESSERA_CHECK(fs::exists(parent), "--reference-logits ", ref, ": the folder ",
                    parent.string(), " does not exist (nothing was written)");
      TESSERA_CHECK(fs::is_directory(parent), "--reference-logits ", ref, ": ", parent.string(),
                    " is not a directory (nothing was written)");
      TESSERA_CHECK(!fs::is_directory(ref), "--reference-logits ", ref,
                    " is a directory (nothing was written)");
      TESSERA_CHECK(!fs::exists(fs::symlink_status(ref)), "--reference-logits ", ref,
                    " exists; choose a new name or remove it (nothing was written)");
    }
    train::LoadedModel m = train::load_model(args);

    Config cfg = m.config;
    // Refused architectures fail here, before anything is written.
    const std::string why = train::hf_unsupported(cfg);
    TESSERA_CHECK(why.empty(), "this model has no Hugging Face counterpart: ", why,
                  " (nothing was written)");
    const nn::GPT* model = m.model.get();
    std::unique_ptr<nn::GPT> merged;
    if (m.lora) {
      cfg.lora = LoraConfig{};
      Generator init(0);
      merged = std::make_unique<nn::GPT>(train::model_config(cfg.model, cfg.train), init);
      m.lora->merge_into(*merged);
      model = merged.get();
    }
    // A full checkpoint's tensors as stored (a bf16 one stays bf16, byte for byte); load_model's
    // copies are f32. A merged LoRA model is what merge_into computed.
    const auto params = m.lora ? model->parameters() : load_checkpoint(m.path).model;
    const std::string staged = train::staging_path(ref);
    int64_t T = 0;
    if (!ref.empty()) {
      NoGradGuard no_grad;
      const int64_t V = cfg.model.vocab_size;
      T = std::min<int64_t>(cfg.model.block_size, 16);
      std::vector<int32_t> ids(size_t(2 * T));
      for (int64_t i = 0; i < 2 * T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % V);
      Tensor tokens = from_vector<int32_t>(ids, {2, T});
      Tensor logits = model->forward(tokens, false).to(DType::F32);
      try {
        write_safetensors(staged, {{"tokens", tokens}, {"logits", logits}});
      } catch (const std::exception& e) {
        TESSERA_FAIL("--reference-logits ", ref, ": ", e.what(), " (nothing was written)");
      }
    }
    // The file goes into place once the directory is: if it cannot, export_hf takes the
    // directory back (and the folders it made above it).
    auto place_reference = [&] {
      if (ref.empty()) return;
      std::error_code ec;
      fs::rename(staged, ref, ec);
      TESSERA_CHECK(!ec, "--reference-logits ", ref, ": cannot rename ", staged,
                    " into place: ", ec.message(), " (nothing was written)");
    };
    try {
      train::export_hf(cfg, params, dir, place_reference);
    } catch (...) {
      std::error_code ec;
      if (!ref.empty()) fs::remove(staged, ec);
      throw;
    }
    std::printf("exported %s (%s, %ld parameters) -> %s\n", m.path.c_str(),
                nn::hf_arch(model->config()).architecture, long(model->num_parameters()),
                dir.c_str());
    for (const std::string& n : train::hf_export_notes(cfg)) std::printf("note: %s\n", n.c_str());
    if (!ref.empty())
      std::printf("reference logits for (2, %ld) tokens -> %s\n", long(T), ref.c_str());
    return 0;
  });
}
