// Hugging Face export and import tests' shared pieces: small GPT-2- and Llama-style configs, a
// checkpoint of random weights, config.json edits, and the export -> import byte-exact round trip.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/retention.h"
#include "config/config.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/load.h"
#include "train/options.h"

namespace tessera::testing::hf {

namespace fs = std::filesystem;

inline Config gpt2_config() {
  Config c;
  c.model.n_layer = 2, c.model.n_head = 2, c.model.n_embd = 16, c.model.block_size = 8;
  c.model.vocab_size = 259;  // byte tokenizer: 257 at least
  return c;
}

inline Config llama_config() {
  Config c = gpt2_config();
  ModelConfig& m = c.model;
  m.norm = "rmsnorm", m.mlp = "swiglu", m.position = "rope", m.n_kv_head = 1;
  m.tie_embeddings = false, m.bias = false, m.mlp_hidden = 24, m.rope_theta = 500000;
  return c;
}

// Qwen3's shape in small: Llama's with q and k normalised, heads wider than n_embd / n_head (2
// query heads of 12 on a width of 16, as Qwen3-0.6B's 16 of 128 on 1024), a tied head.
inline Config qwen3_config() {
  Config c = llama_config();
  c.model.qk_norm = true, c.model.explicit_head_dim = 12, c.model.tie_embeddings = true;
  return c;
}

// Qwen2's shape in small: Llama's with biases on q, k and v alone, a tied head (Qwen2.5-0.5B's).
inline Config qwen2_config() {
  Config c = llama_config();
  c.model.qkv_bias = true, c.model.tie_embeddings = true;
  return c;
}

// A checkpoint of random weights (norm weights and biases too, so that no tensor is trivially
// equal to its initial value) in dtype; returns the run directory.
inline fs::path save_random(const Config& cfg, const fs::path& dir, DType dtype = DType::F32) {
  Generator g(11);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  CheckpointData ck;
  for (const auto& [name, t] : model.parameters())
    ck.model.emplace_back(name, randn(t.shape(), g).to(dtype));
  ck.trainer_ints = {{"step", 1}};
  ck.config_yaml = to_yaml(cfg);
  fs::create_directories(dir);
  save_checkpoint((dir / checkpoint_name(1)).string(), ck);
  write_latest(dir.string(), checkpoint_name(1));
  return dir;
}

inline const std::string kBin = tessera::testing::bin_dir();

inline void replace_in(const fs::path& p, const std::string& from, const std::string& to) {
  std::string s = read_file(p);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

inline bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

inline void expect_round_trip_byte_exact(const Config& cfg, DType dtype) {
  TempDir tmp;
  const fs::path ck = save_random(cfg, tmp.path / "ck", dtype);
  std::string out;
  ASSERT_EQ(run_command(kBin + "/export --checkpoint " + ck.string() + " --output " +
                            (tmp.path / "hf").string(),
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(kBin + "/import " + (tmp.path / "hf").string() + " --output " +
                            (tmp.path / "back").string(),
                        &out),
            0)
      << out;
  const CheckpointData a = load_checkpoint(resolve_checkpoint(ck.string()));
  const CheckpointData b = load_checkpoint(resolve_checkpoint((tmp.path / "back").string()));
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i) {
    EXPECT_EQ(a.model[i].first, b.model[i].first);  // the model's order
    EXPECT_EQ(a.model[i].second.dtype(), b.model[i].second.dtype()) << a.model[i].first;
    EXPECT_EQ(tessera::testing::bytes(a.model[i].second),
              tessera::testing::bytes(b.model[i].second))
        << a.model[i].first;
  }
  const Config back = parse_config(b.config_yaml, "imported");
  EXPECT_EQ(model_difference(back.model, cfg.model), "");
  // The imported checkpoint loads as eval and generate load one.
  EXPECT_NO_THROW(train::load_model((tmp.path / "back").string()));
}

// A fresh model of cfg (seed 1) exported into dir; dir.
inline fs::path export_fresh(const Config& cfg, const fs::path& dir) {
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  train::export_hf(cfg, model.parameters(), dir.string());
  return dir;
}

// An export of a Qwen-style cfg (model_type `type`, class `arch`) in dir, its config.json then
// rewritten as a Llama one: Qwen's keys become ones LlamaConfig reads or import passes over, so
// that import reads its tensors as Llama's.
inline fs::path export_as_llama(const Config& cfg, const fs::path& dir, const std::string& type,
                                const std::string& arch) {
  const fs::path d = export_fresh(cfg, dir);
  replace_in(d / "config.json", "\"model_type\": \"" + type + "\"", "\"model_type\": \"llama\"");
  replace_in(d / "config.json", "[\"" + arch + "\"]", "[\"LlamaForCausalLM\"]");
  replace_in(d / "config.json", "\"use_sliding_window\": false", "\"mlp_bias\": false");
  replace_in(d / "config.json", "\"sliding_window\": null", "\"pretraining_tp\": 1");
  replace_in(d / "config.json", "\"max_window_layers\": 2", "\"pad_token_id\": 2");
  return d;
}

// scripts/SCRIPT (check_export.py, hf_logits.py) run by Debian's python3 with args: its exit code,
// its output in out.
inline int run_script(const std::string& script, const std::string& args, std::string* out) {
  return tessera::testing::run_command(
      "/usr/bin/python3 " + std::string(TESSERA_SOURCE_DIR) + "/scripts/" + script + " " + args,
      out);
}

// build/export of the checkpoint ck into hf, its reference logits written to ref: export's exit
// code, its output in out.
inline int export_with_logits(const fs::path& ck, const std::string& hf, const std::string& ref,
                              std::string* out) {
  return tessera::testing::run_command(kBin + "/export --checkpoint " + ck.string() + " --output " +
                                           hf + " --reference-logits " + ref,
                                       out);
}

// What import_hf of d says when it refuses it.
inline std::string import_error(const fs::path& d) {
  return error_of([&] { train::import_hf(d.string()); });
}

// export_hf of a fresh model of cfg into out is refused with a message holding why, and nothing
// is written.
inline void expect_export_refused(const Config& cfg, const fs::path& out, const std::string& why) {
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const std::string m = error_of([&] { train::export_hf(cfg, model.parameters(), out.string()); });
  EXPECT_TRUE(has(m, why) && has(m, "nothing was written")) << m;
  EXPECT_FALSE(fs::exists(out)) << why;
}

}  // namespace tessera::testing::hf
