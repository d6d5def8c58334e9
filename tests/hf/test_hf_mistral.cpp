// MistralForCausalLM through import: Llama's tensors under Mistral's config.json (Mistral 7B
// v0.1's keys, its sizes made small), its sliding_window as model.sliding_window (null, as v0.2
// and later write it, for none), the class named in the import line, and a mismatched class
// refused by key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config/expect_contains.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/options.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::error_of;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// Mistral 7B v0.1's config.json keys with the fixture's Llama sizes (2 layers of 16, 2 query
// heads on 1 key-value head, MLP 24, vocabulary 259); `window` as its sliding_window.
std::string mistral_config(const std::string& window,
                           const std::string& arch = "MistralForCausalLM") {
  return R"({
  "architectures": [")" +
         arch + R"("], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 24,
  "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 2,
  "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "sliding_window": )" +
         window + R"(, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 259
})";
}

fs::path export_llama(const fs::path& dir, std::vector<std::pair<std::string, Tensor>>& params) {
  const Config cfg = llama_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  params = model.parameters();
  train::export_hf(cfg, params, dir.string());
  return dir;
}

}  // namespace

TEST(HFMistral, a_config_json_as_mistrals_imports_with_its_window) {
  TempDir tmp;
  std::vector<std::pair<std::string, Tensor>> params;
  const fs::path d = export_llama(tmp.path / "hf", params);
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << mistral_config("4");
  const train::HFModel m = train::import_hf(d.string());
  EXPECT_EQ(m.architecture, "MistralForCausalLM");
  const ModelConfig& c = m.config.model;
  const ModelConfig want = llama_config().model;
  EXPECT_EQ(c.sliding_window, 4);
  EXPECT_FALSE(c.bias);
  EXPECT_EQ(c.norm, "rmsnorm");
  EXPECT_EQ(c.mlp, "swiglu");
  EXPECT_EQ(c.position, "rope");
  EXPECT_EQ(c.n_layer, want.n_layer);
  EXPECT_EQ(c.n_kv_head, 1);
  EXPECT_EQ(c.block_size, 32768);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.norm_eps, 1e-5);
  // The tensors are Llama's, by name and value.
  ASSERT_EQ(m.params.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(m.params[i].first, params[i].first);
    EXPECT_EQ(m.params[i].second.to_vector<float>(), params[i].second.to_vector<float>())
        << params[i].first;
  }
  // v0.2 and later: no window.
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << mistral_config("null");
  EXPECT_EQ(train::import_hf(d.string()).config.model.sliding_window, 0);

  std::string out;
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << mistral_config("4");
  ASSERT_EQ(
      run_command(kBin + "/import " + d.string() + " --output " + (tmp.path / "ck").string(), &out),
      0)
      << out;
  EXPECT_CONTAINS(out, "(MistralForCausalLM, ");

  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc)
      << mistral_config("4", "LlamaForCausalLM");
  EXPECT_CONTAINS(error_of([&] { train::import_hf(d.string()); }),
                  "architectures: expected [\"MistralForCausalLM\"]");
}
