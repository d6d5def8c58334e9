// Qwen3ForCausalLM through export and import: model.qk_norm and model.head_dim in config.json and
// back byte for byte, a config.json as Qwen3's published ones are written, what Qwen3 cannot
// express refused by key (the logits against an HF-structured Qwen3 are in test_hf.cpp's
// independent_reader_and_hf_structured_pytorch_agree), and weights in shards, as the larger
// Qwen3 models are published.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint/json.h"
#include "checkpoint/safetensors.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "nn/hf_names.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/options.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::error_of;
using tessera::testing::read_file;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

TEST(HFQwen3, round_trip_is_byte_exact) {
  expect_round_trip_byte_exact(qwen3_config(), DType::F32);
  Config untied = qwen3_config();
  untied.model.tie_embeddings = false, untied.model.explicit_head_dim = 0;
  expect_round_trip_byte_exact(untied, DType::BF16);
}

TEST(HFQwen3, config_json_names_qwen3_with_its_head_dim_and_no_window) {
  TempDir tmp;
  const fs::path d = export_fresh(qwen3_config(), tmp.path / "hf");
  const Json c = parse_json(read_file(d / "config.json"), "config.json");
  EXPECT_EQ(c.get("model_type")->str(), "qwen3");
  EXPECT_EQ(c.get("architectures")->items()[0].str(), "Qwen3ForCausalLM");
  EXPECT_EQ(c.get("head_dim")->as_int(), 12);
  EXPECT_EQ(c.get("hidden_size")->as_int(), 16);
  EXPECT_FALSE(c.get("use_sliding_window")->boolean());
  EXPECT_TRUE(c.get("sliding_window")->is(Json::Kind::Null));
  EXPECT_FALSE(c.get("attention_bias")->boolean());
  EXPECT_EQ(c.get("mlp_bias"), nullptr);  // not a Qwen3Config key
  std::string out;  // import names the class it read (2 layers of 11 tensors, embedding, norm)
  ASSERT_EQ(tessera::testing::run_command(
                kBin + "/import " + d.string() + " --output " + (tmp.path / "back").string(), &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "(Qwen3ForCausalLM, 24 tensors)")) << out;
  // A Llama-style model without the norms stays LlamaForCausalLM, its head_dim written too.
  Config llama = llama_config();
  llama.model.explicit_head_dim = 12;
  const fs::path l = export_fresh(llama, tmp.path / "llama");
  const Json lc = parse_json(read_file(l / "config.json"), "config.json");
  EXPECT_EQ(lc.get("model_type")->str(), "llama");
  EXPECT_EQ(lc.get("head_dim")->as_int(), 12);
  EXPECT_EQ(train::import_hf(l.string()).config.model.explicit_head_dim, 12);
}

TEST(HFQwen3, a_config_json_as_qwen3s_published_ones_imports) {
  // Qwen3-0.6B's config.json's keys (its sizes made small): layer_types, a sliding_window that
  // is off, max_window_layers, rope_scaling null, head_dim apart from hidden_size / heads.
  TempDir tmp;
  const fs::path d = export_fresh(qwen3_config(), tmp.path / "hf");
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 12, "hidden_act": "silu",
  "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 24,
  "layer_types": ["full_attention", "full_attention"], "max_position_embeddings": 40960,
  "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 2,
  "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 259
})";
  const train::HFModel m = train::import_hf(d.string());
  const ModelConfig& c = m.config.model;
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.explicit_head_dim, 12);
  EXPECT_EQ(c.head_dim(), 12);
  EXPECT_FALSE(c.bias);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.block_size, 40960);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(m.params.size(), nn::param_specs(train::model_config(c, m.config.train)).size());
  bool norms = false;
  for (const auto& [name, t] : m.params)
    norms |= name == "model.layers.1.self_attn.k_norm.weight" && t.shape() == Shape{12};
  EXPECT_TRUE(norms);
}

TEST(HFQwen3, what_qwen3_cannot_express_is_refused_by_key) {
  TempDir tmp;
  int n = 0;
  auto edited = [&](const std::string& from, const std::string& to) {
    const fs::path d = export_fresh(qwen3_config(), tmp.path / ("hf" + std::to_string(n++)));
    replace_in(d / "config.json", from, to);
    return import_error(d);
  };
  std::string e = edited("\"use_sliding_window\": false", "\"use_sliding_window\": true");
  EXPECT_TRUE(has(e, "use_sliding_window") && has(e, "max_window_layers")) << e;
  e = edited("\"attention_bias\": false", "\"attention_bias\": true");
  EXPECT_TRUE(has(e, "attention_bias") && has(e, "Qwen3's MLP has no biases")) << e;
  e = edited("\"max_window_layers\"",
             "\"layer_types\": [\"full_attention\", \"sliding_attention\"], \"max_window_layers\"");
  EXPECT_TRUE(has(e, "layer_types") && has(e, "full_attention")) << e;
  e = edited("\"use_sliding_window\"", "\"mlp_bias\": false, \"use_sliding_window\"");
  EXPECT_TRUE(has(e, "unsupported key \"mlp_bias\"")) << e;
  e = edited("[\"Qwen3ForCausalLM\"]", "[\"LlamaForCausalLM\"]");
  EXPECT_TRUE(has(e, "expected [\"Qwen3ForCausalLM\"]")) << e;
  // Read as Llama, the file's norm weights belong to no parameter: refused, naming one.
  e = import_error(
      export_as_llama(qwen3_config(), tmp.path / "as-llama", "qwen3", "Qwen3ForCausalLM"));
  EXPECT_TRUE(has(e, "self_attn.q_norm.weight' is not a parameter")) << e;

  // Export: the norms need Llama's style and no biases.
  struct Case {
    std::function<void(Config&)> change;
    std::string why;
  };
  for (const Case& k :
       std::vector<Case>{{[](Config& c) { c.model.bias = true; }, "Qwen3's MLP has no biases"},
                         {[](Config& c) { c = gpt2_config(), c.model.qk_norm = true; },
                          "GPT2Attention does not normalise q and k"}}) {
    Config cfg = qwen3_config();
    k.change(cfg);
    expect_export_refused(cfg, tmp.path / "refused", k.why);
  }
}

TEST(HFImport, sharded_weights_import_as_one_file_does) {
  // Qwen3-1.7B and larger are written in shards with model.safetensors.index.json: the same
  // tensors split over two files import to the same parameters, and a map that disagrees with its
  // shards is refused naming the index, the shard and the tensor.
  TempDir tmp;
  const fs::path one = export_fresh(qwen3_config(), tmp.path / "one");
  const train::HFModel want = train::import_hf(one.string());
  const SafetensorsFile st = read_safetensors((one / "model.safetensors").string());
  int n = 0;
  // Writes dir with the tensors split in two (the first `first` in shard 1) and an index whose
  // weight_map maps each tensor to shard_of(i, default shard); returns dir.
  auto sharded = [&](size_t first, const std::function<std::string(size_t, std::string)>& map) {
    const fs::path d = tmp.path / ("sharded" + std::to_string(n++));
    fs::create_directories(d);
    fs::copy_file(one / "config.json", d / "config.json");
    const std::string a = "model-00001-of-00002.safetensors",
                      b = "model-00002-of-00002.safetensors";
    write_safetensors((d / a).string(), {st.tensors.begin(), st.tensors.begin() + first});
    write_safetensors((d / b).string(), {st.tensors.begin() + first, st.tensors.end()});
    std::string json = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
    for (size_t i = 0; i < st.tensors.size(); ++i)
      json +=
          (i ? ", \"" : "\"") + st.tensors[i].first + "\": \"" + map(i, i < first ? a : b) + "\"";
    std::ofstream(d / "model.safetensors.index.json") << json << "}}";
    return d;
  };
  auto same = [](size_t, std::string shard) { return shard; };
  const train::HFModel got = train::import_hf(sharded(5, same).string());
  ASSERT_EQ(got.params.size(), want.params.size());
  for (size_t i = 0; i < got.params.size(); ++i) {
    EXPECT_EQ(got.params[i].first, want.params[i].first);
    EXPECT_EQ(tessera::testing::bytes(got.params[i].second),
              tessera::testing::bytes(want.params[i].second))
        << got.params[i].first;
  }
  const std::string moved = st.tensors[2].first;
  std::string e = import_error(sharded(5, [](size_t i, std::string s) {
    return i == 2 ? std::string("model-00002-of-00002.safetensors") : s;
  }));
  EXPECT_TRUE(has(e, "model-00001-of-00002.safetensors: tensor '" + moved + "' is mapped to " +
                         "model-00002-of-00002.safetensors"))
      << e;
  e = import_error(sharded(5, [](size_t i, std::string s) {
    return i == 0 ? std::string("model-00003-of-00003.safetensors") : s;
  }));
  EXPECT_TRUE(has(e, "names model-00003-of-00003.safetensors, which is missing")) << e;
  e = import_error(sharded(
      5, [](size_t i, std::string s) { return i == 1 ? std::string("../model.safetensors") : s; }));
  EXPECT_TRUE(has(e, "not a file beside the index")) << e;
  // Beside model.safetensors an index is not read: the one file is the model.
  fs::copy_file(sharded(5, same) / "model.safetensors.index.json",
                one / "model.safetensors.index.json");
  EXPECT_EQ(train::import_hf(one.string()).params.size(), want.params.size());
}
