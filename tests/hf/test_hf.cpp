// Hugging Face export and import: build/export -> build/import gives back every tensor byte for
// byte; architectures HF cannot compute are refused by name with nothing written; config.json
// values tessera cannot reproduce, and non-finite weights, are errors naming the key or tensor;
// `--init hf:DIR` loads the same weights; and, where /usr/bin/python3 has numpy, h5py and torch,
// the independent reader (scripts/check_export.py) and the HF-structured PyTorch models
// (scripts/hf_logits.py) agree with tessera.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/json.h"
#include "checkpoint/retention.h"
#include "checkpoint/safetensors.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/load.h"
#include "train/trainer.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::TempDir;
using tessera::testing::read_file;
using tessera::testing::run_command;
using namespace tessera::testing::hf;
namespace fs = std::filesystem;

TEST(HFExport, gpt2_style_round_trip_is_byte_exact) {
  expect_round_trip_byte_exact(gpt2_config(), DType::F32);
}

TEST(HFExport, gpt2_style_round_trip_keeps_a_layer_norm_epsilon_other_than_the_default) {
  // config.json's layer_norm_epsilon is what transformers normalises with. The default 1e-5 is
  // also what import assumes when the key is missing, so only another value shows it is written.
  Config c = gpt2_config();
  c.model.norm_eps = 1e-6;
  expect_round_trip_byte_exact(c, DType::F32);
}

TEST(HFExport, llama_style_round_trip_is_byte_exact) {
  expect_round_trip_byte_exact(llama_config(), DType::F32);
}

TEST(HFExport, a_model_extended_past_its_scaling_length_round_trips_with_its_block_size) {
  // As configs/extend-context.yaml leaves one: YaRN x4 from L0 = block_size / 4. config.json's
  // max_position_embeddings holds L0 (what transformers' yarn reads); tessera_block_size the rest.
  Config c = llama_config();
  c.model.rope_scaling.type = "yarn", c.model.rope_scaling.factor = 4;
  c.model.rope_scaling.original_max_position = c.model.block_size / 4;
  expect_round_trip_byte_exact(c, DType::F32);
}

TEST(HFExport, llama3_scaling_round_trips_with_its_frequency_factors) {
  Config c = llama_config();
  RopeScalingConfig& r = c.model.rope_scaling;
  r.type = "llama3", r.factor = 8, r.original_max_position = 4;
  r.low_freq_factor = 2, r.high_freq_factor = 8;  // not the defaults (1 and 4)
  expect_round_trip_byte_exact(c, DType::F32);
}

TEST(HFExport, yarn_scaling_round_trips_with_its_betas_and_attention_factor) {
  Config c = llama_config();
  RopeScalingConfig& r = c.model.rope_scaling;
  r.type = "yarn", r.factor = 2, r.original_max_position = 4;
  r.beta_fast = 16, r.beta_slow = 2, r.attention_factor = 1.25;  // not the defaults
  expect_round_trip_byte_exact(c, DType::F32);
}

// HF's dynamic scaling takes L0 from max_position_embeddings: a dict naming another
// original_max_position_embeddings is refused, the same one is taken.
TEST(HFImport, dynamic_scaling_takes_l0_only_from_max_position_embeddings) {
  TempDir tmp;
  Config cfg = llama_config();
  cfg.model.rope_scaling.type = "dynamic", cfg.model.rope_scaling.factor = 2;
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const fs::path d = tmp.path / "hf";
  train::export_hf(cfg, model.parameters(), d.string());
  const std::string good = read_file(d / "config.json");
  replace_in(d / "config.json", "\"factor\": 2",
             "\"factor\": 2, \"original_max_position_embeddings\": 8");
  EXPECT_EQ(train::import_hf(d.string()).config.model.rope_scaling.type, "dynamic");
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << good;
  replace_in(d / "config.json", "\"factor\": 2",
             "\"factor\": 2, \"original_max_position_embeddings\": 4");
  const std::string m = error_of([&] { train::import_hf(d.string()); });
  EXPECT_TRUE(has(m, "rope_scaling.original_max_position_embeddings") &&
              has(m, "differs from max_position_embeddings"))
      << m;
}

// What GPT2Config reads and import does not check back: config.json states tessera's choices
// (the tanh GELU, no attention dropout, plain 1/sqrt(d) scaling), the dtype and the end-of-text
// ids, and notes the byte tokenizer, which has no Hugging Face file.
TEST(HFExport, config_json_states_the_choices_import_does_not_read_back) {
  TempDir tmp;
  const Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  std::vector<std::pair<std::string, Tensor>> bf16;
  for (const auto& [name, t] : model.parameters()) bf16.emplace_back(name, t.to(DType::BF16));
  train::export_hf(cfg, model.parameters(), (tmp.path / "f32").string());
  train::export_hf(cfg, bf16, (tmp.path / "bf16").string());
  const Json c = parse_json(read_file(tmp.path / "f32" / "config.json"), "config.json");
  EXPECT_EQ(c.at("activation_function").str(), "gelu_new");
  EXPECT_EQ(c.at("attn_pdrop").as_double(), 0.0);
  EXPECT_TRUE(c.at("scale_attn_weights").boolean());
  EXPECT_FALSE(c.at("scale_attn_by_inverse_layer_idx").boolean());
  EXPECT_FALSE(c.at("reorder_and_upcast_attn").boolean());
  EXPECT_EQ(c.at("bos_token_id").as_int(), 256);
  EXPECT_EQ(c.at("eos_token_id").as_int(), 256);
  EXPECT_EQ(c.at("torch_dtype").str(), "float32");
  const auto& notes = c.at("tessera_notes").items();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_TRUE(has(notes[0].str(), "tessera's byte-level tokenizer")) << notes[0].str();
  const Json b = parse_json(read_file(tmp.path / "bf16" / "config.json"), "config.json");
  EXPECT_EQ(b.at("torch_dtype").str(), "bfloat16");
}

// Every parameter has a place in the export: one without a Hugging Face name is refused, not
// left out.
TEST(HFExport, a_parameter_without_a_hugging_face_name_is_refused) {
  TempDir tmp;
  const Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  auto params = model.parameters();
  params.emplace_back("transformer.extra.weight", zeros({2}));
  const std::string m =
      error_of([&] { train::export_hf(cfg, params, (tmp.path / "hf").string()); });
  EXPECT_TRUE(has(m, "parameter 'transformer.extra.weight' has no Hugging Face name")) << m;
  EXPECT_FALSE(fs::exists(tmp.path / "hf"));
}

TEST(HFExport, biased_tied_llama_in_bf16_round_trip_is_byte_exact) {
  Config c = llama_config();
  c.model.bias = true, c.model.tie_embeddings = true;
  expect_round_trip_byte_exact(c, DType::BF16);
}

TEST(HFExport, conv1d_weights_are_transposed_and_a_tied_head_is_not_written) {
  TempDir tmp;
  Config cfg = gpt2_config();
  Generator g(2);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  train::export_hf(cfg, model.parameters(), (tmp.path / "hf").string());
  SafetensorsFile f = read_safetensors((tmp.path / "hf" / "model.safetensors").string());
  std::map<std::string, Tensor> st(f.tensors.begin(), f.tensors.end());
  EXPECT_EQ(st.count("lm_head.weight"), 0u);
  const Tensor w = model.parameter("transformer.h.1.attn.c_attn.weight");  // [3 C, C]
  const Tensor hw = st.at("transformer.h.1.attn.c_attn.weight");           // Conv1D [C, 3 C]
  ASSERT_EQ(hw.shape(), (Shape{16, 48}));
  // HF splits c_attn's output into q, k, v along its columns: column j of HF is row j here.
  EXPECT_EQ(hw.to_vector<float>()[size_t(3 * 48 + 20)], w.to_vector<float>()[size_t(20 * 16 + 3)]);
  EXPECT_EQ(st.at("transformer.wte.weight").shape(), (Shape{259, 16}));  // an Embedding: as is
  const std::string config = read_file(tmp.path / "hf" / "config.json");
  EXPECT_TRUE(has(config, "\"activation_function\": \"gelu_new\"")) << config;
  EXPECT_TRUE(has(config, "\"tie_word_embeddings\": true")) << config;
}

TEST(HFExport, architectures_without_an_hf_counterpart_are_refused_by_name) {
  TempDir tmp;
  struct Case {
    std::function<void(Config&)> change;
    std::string key;
  };
  const std::vector<Case> cases = {
      {[](Config& c) { c.model.attention = "stick_breaking", c.model.position = "none"; },
       "model.attention is stick_breaking"},
      {[](Config& c) { c.model.position = "none"; }, "model.position is none"},
      {[](Config& c) { c.model.position = "alibi"; }, "model.position is alibi"},
      {[](Config& c) { c.model.bias = false; }, "model.bias is false"},
      {[](Config& c) { c.model.position = "rope"; }, "GPT2LMHeadModel has learned positions only"},
      {[](Config& c) { c.model.n_kv_head = 1; }, "model.n_kv_head"},
      {[](Config& c) { c.model.mlp = "swiglu"; }, "model.norm is layernorm"},
      {[](Config& c) { c.model.norm = "rmsnorm"; }, "model.mlp is gelu"},
      {[](Config& c) { c.model.sliding_window = 8; }, "model.sliding_window is 8"},
  };
  for (const Case& k : cases) {
    Config cfg = gpt2_config();
    k.change(cfg);
    const fs::path out = tmp.path / "hf";
    Generator g(1);
    const nn::GPTConfig gc = train::model_config(cfg.model, cfg.train);
    EXPECT_EQ(gc.attention.window, cfg.model.sliding_window);  // the key reaches the model's attention spec
    nn::GPT model(gc, g);
    const std::string m = error_of([&] { train::export_hf(cfg, model.parameters(), out.string()); });
    EXPECT_TRUE(has(m, k.key) && has(m, "nothing was written")) << m;
    EXPECT_FALSE(fs::exists(out)) << k.key;
  }
  // Through the binary: a non-zero exit and no directory.
  Config sb = gpt2_config();
  sb.model.attention = "stick_breaking", sb.model.position = "none";
  const fs::path ck = save_random(sb, tmp.path / "sb");
  std::string out;
  EXPECT_NE(run_command(kBin + "/export --checkpoint " + ck.string() + " --output " +
                    (tmp.path / "sb-hf").string(), &out), 0);
  EXPECT_TRUE(has(out, "stick_breaking")) << out;
  EXPECT_FALSE(fs::exists(tmp.path / "sb-hf"));
}

TEST(HFExport, an_output_that_is_a_file_is_refused_as_a_file) {
  TempDir tmp;
  const Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const std::string file = tmp.write("hf", "x");
  const std::string m = error_of([&] { train::export_hf(cfg, model.parameters(), file); });
  EXPECT_TRUE(has(m, file + " is a file, not a directory (nothing was written)")) << m;
  EXPECT_EQ(read_file(file), "x");
}

TEST(HFExport, reference_logits_that_cannot_be_written_leave_nothing_written) {
  TempDir tmp;
  const fs::path ck = save_random(gpt2_config(), tmp.path / "ck");
  const std::string hf = (tmp.path / "hf").string(), ref = (tmp.path / "ref.st").string();
  const std::string exp = kBin + "/export --checkpoint " + ck.string() + " --output " + hf;
  std::string out;
  // A missing directory, a directory as the file, a file inside --output.
  for (const std::string& bad : {(tmp.path / "missing" / "ref.st").string(), tmp.path.string(),
                                 hf + "/ref.st"}) {
    EXPECT_EQ(run_command(exp + " --reference-logits " + bad, &out), 1) << out;
    EXPECT_TRUE(has(out, "--reference-logits " + bad) && has(out, "nothing was written")) << out;
    EXPECT_FALSE(fs::exists(hf)) << out;
  }
  // Inside --output is the rule named, before --output exists and however it is spelled.
  for (const std::string& spelled : {hf, hf + "/", hf + "/."}) {
    const std::string cmd = kBin + "/export --checkpoint " + ck.string() + " --output " + spelled;
    EXPECT_EQ(run_command(cmd + " --reference-logits " + hf + "/ref.st", &out), 1) << out;
    EXPECT_TRUE(has(out, "lies inside --output " + spelled)) << out;
  }
  // An existing file is refused by name and kept.
  const std::string old = tmp.write("old.txt", "keep");
  EXPECT_EQ(run_command(exp + " --reference-logits " + old, &out), 1) << out;
  EXPECT_TRUE(has(out, "--reference-logits " + old + " exists") && has(out, "nothing was written"))
      << out;
  EXPECT_EQ(read_file(old), "keep");
  EXPECT_FALSE(fs::exists(hf)) << out;
  // --output refused after the logits were computed: neither file is left.
  fs::create_directories(hf);
  tmp.write("hf/keep", "x");
  EXPECT_EQ(run_command(exp + " --reference-logits " + ref, &out), 1) << out;
  EXPECT_TRUE(has(out, "exists and is not an empty directory")) << out;
  EXPECT_FALSE(fs::exists(ref) || tessera::testing::staging_left(ref)) << out;
  fs::remove_all(hf);
  // The same command then succeeds and writes both.
  EXPECT_EQ(run_command(exp + " --reference-logits " + ref, &out), 0) << out;
  EXPECT_TRUE(fs::exists(fs::path(hf) / "model.safetensors") && fs::exists(ref)) << out;
  EXPECT_FALSE(tessera::testing::staging_left(ref));
}

TEST(HFExport, s2_attn_and_the_gpt2_tokenizer_export_with_their_notes_and_files) {
  TempDir tmp;
  Config cfg = gpt2_config();
  cfg.train.s2_attn = true;
  cfg.data.tokenizer = "gpt2";
  cfg.model.vocab_size = 50257;
  tmp.write("encoder.json", "{\"a\": 0}");  // stand-ins: export copies them byte for byte
  tmp.write("vocab.bpe", "#v\n");
  cfg.data.tokenizer_dir = tmp.path.string();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  train::export_hf(cfg, model.parameters(), (tmp.path / "hf").string());
  const std::string config = read_file(tmp.path / "hf" / "config.json");
  EXPECT_TRUE(has(config, "S^2-Attn")) << config;
  EXPECT_TRUE(has(config, "\"eos_token_id\": 50256")) << config;
  EXPECT_EQ(read_file(tmp.path / "hf" / "vocab.json"), "{\"a\": 0}");
  EXPECT_EQ(read_file(tmp.path / "hf" / "merges.txt"), "#v\n");
  const train::HFModel back = train::import_hf((tmp.path / "hf").string());
  EXPECT_EQ(back.config.data.tokenizer, "gpt2");
  EXPECT_TRUE(back.gpt2_tokenizer_files);
}

// A Llama-style model whose data.tokenizer is a tokenizer.json (hf): export copies tokenizer.json
// and tokenizer_config.json and names the end-of-text id; import (with tessera's key, or without
// it as a model repository has it) copies them under the checkpoint and generate samples through
// them. The file: the 256 byte tokens and one added token, no merges.
TEST(HFExport, a_tokenizer_json_travels_with_the_model_both_ways) {
  TempDir tmp;
  std::string vocab;
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) {  // GPT-2's bytes_to_unicode spelling, as \u escapes
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    char key[16];
    std::snprintf(key, sizeof key, "\\u%04X", printable ? unsigned(b) : 0x100 + n++);
    vocab += (b ? ", \"" : "\"") + std::string(key) + "\": " + std::to_string(b);
  }
  const std::string json =
      R"({"added_tokens": [{"id": 256, "content": "<|end_of_text|>", "special": true}],)"
      R"( "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "use_regex": true},)"
      R"( "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {)" +
      vocab + R"(}, "merges": []}})";
  fs::create_directories(tmp.path / "tok");
  tmp.write("tok/tokenizer.json", json);
  tmp.write("tok/tokenizer_config.json", R"({"eos_token": "<|end_of_text|>"})");
  Config cfg = llama_config();
  cfg.data.tokenizer = "hf";
  cfg.data.tokenizer_dir = (tmp.path / "tok").string();
  const fs::path ck = save_random(cfg, tmp.path / "ck"), hf = tmp.path / "hf";
  std::string out;
  ASSERT_EQ(
      run_command(kBin + "/export --checkpoint " + ck.string() + " --output " + hf.string(), &out),
      0)
      << out;
  EXPECT_EQ(read_file(hf / "tokenizer.json"), json);
  EXPECT_TRUE(fs::exists(hf / "tokenizer_config.json"));
  EXPECT_TRUE(has(read_file(hf / "config.json"), "\"eos_token_id\": 256"))
      << read_file(hf / "config.json");
  for (const bool tessera_key : {true, false}) {
    if (!tessera_key) {  // as a model repository writes config.json: the files decide
      std::string c = read_file(hf / "config.json");
      const size_t key = c.find("\"tessera_tokenizer\"");
      ASSERT_NE(key, std::string::npos) << c;
      const size_t from = c.rfind(',', key), to = c.find("\"hf\"", key) + 4;
      c.erase(from, to - from);
      std::ofstream(hf / "config.json", std::ios::binary | std::ios::trunc) << c;
    }
    const fs::path back = tmp.path / (tessera_key ? "back" : "back2");
    ASSERT_EQ(run_command(kBin + "/import " + hf.string() + " --output " + back.string(), &out), 0)
        << out;
    EXPECT_EQ(read_file(back / "tokenizer" / "tokenizer.json"), json);
    const Config c =
        parse_config(load_checkpoint(resolve_checkpoint(back.string())).config_yaml, "back");
    EXPECT_EQ(c.data.tokenizer, "hf");
    EXPECT_EQ(c.data.tokenizer_dir, (back / "tokenizer").string());
    EXPECT_EQ(run_command(kBin + "/generate --checkpoint " + back.string() +
                              " --prompt ab --max-new-tokens 4",
                          &out),
              0)
        << out;
  }
}

// README's `build/export --output hf/tiny` on a fresh checkout: the folders above --output are
// made, as transformers' save_pretrained makes its directory's; where one cannot be (a file in
// the way) the error names it; an export refused before writing makes none, and one that fails
// while writing takes back those it made.
TEST(HFExport, missing_folders_above_the_output_are_made_and_a_failed_export_takes_them_back) {
  TempDir tmp;
  Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  train::export_hf(cfg, model.parameters(), (tmp.path / "a" / "b" / "hf").string());
  EXPECT_TRUE(fs::exists(tmp.path / "a" / "b" / "hf" / "model.safetensors"));
  const std::string file = tmp.write("f", "x");
  const std::string m = error_of(
      [&] { train::export_hf(cfg, model.parameters(), (tmp.path / "f" / "c" / "hf").string()); });
  EXPECT_TRUE(has(m, "cannot create the folder " + (tmp.path / "f" / "c").string()) &&
              has(m, "(nothing was written)"))
      << m;
  EXPECT_EQ(read_file(file), "x");
  Config sb = cfg;
  sb.model.attention = "stick_breaking";
  EXPECT_FALSE(error_of([&] {
                 train::export_hf(sb, model.parameters(), (tmp.path / "d" / "hf").string());
               }).empty());
  EXPECT_FALSE(fs::exists(tmp.path / "d"));
  // Failing while it writes (gpt2's vocab.bpe a folder, which the copy refuses): the folders it
  // made go with the staging directory; one that was there stays.
  fs::create_directories(tmp.path / "tok" / "vocab.bpe");
  tmp.write("tok/encoder.json", "{}");
  Config gpt2 = cfg;
  gpt2.data.tokenizer = "gpt2", gpt2.data.tokenizer_dir = (tmp.path / "tok").string();
  const std::string hf = (tmp.path / "a" / "e" / "hf").string();
  const std::string w = error_of([&] { train::export_hf(gpt2, model.parameters(), hf); });
  EXPECT_TRUE(has(w, "export to " + hf) && has(w, "vocab.bpe") && has(w, "(nothing was written)"))
      << w;
  EXPECT_FALSE(fs::exists(tmp.path / "a" / "e"));
  EXPECT_TRUE(fs::exists(tmp.path / "a" / "b" / "hf" / "model.safetensors"));
  for (const auto& e : fs::directory_iterator(tmp.path / "a"))  // nothing staged is left
    EXPECT_EQ(e.path().filename(), "b") << e.path();
}

// A step that fails once the directory is in place (export's --reference-logits rename): the
// directory goes with the folders made above it; an empty directory that was there stays.
TEST(HFExport, a_step_failing_after_the_directory_is_placed_takes_it_back) {
  TempDir tmp;
  Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  int placed = 0;
  auto export_then_fail = [&](const fs::path& out) {
    return error_of([&] {
      train::export_hf(cfg, model.parameters(), out.string(), [&] {
        placed += fs::exists(out / "model.safetensors");
        TESSERA_FAIL("the step after");
      });
    });
  };
  EXPECT_TRUE(has(export_then_fail(tmp.path / "a" / "b" / "hf"), "the step after"));
  EXPECT_FALSE(fs::exists(tmp.path / "a"));
  fs::create_directories(tmp.path / "empty");
  EXPECT_TRUE(has(export_then_fail(tmp.path / "empty"), "the step after"));
  EXPECT_TRUE(fs::is_directory(tmp.path / "empty") && fs::is_empty(tmp.path / "empty"));
  EXPECT_EQ(placed, 2);
  for (const auto& e : fs::directory_iterator(tmp.path))  // nothing staged is left
    EXPECT_EQ(e.path().filename(), "empty") << e.path();
}

// build/import reads vocab.json and merges.txt before it writes: files that generate or eval would
// refuse later leave no checkpoint behind. With GPT-2's real files (when prepare_data.sh fetched
// them) the same directory imports.
// export stages its directory under a name of its own: a directory named <output>.export-tmp that
// someone made (or an interrupted export left) is not removed.
TEST(HFExport, staging_never_removes_a_directory_it_did_not_make) {
  TempDir tmp;
  tmp.write("stale", "");
  fs::create_directories(tmp.path / "hf.export-tmp");
  tmp.write("hf.export-tmp/notes.txt", "mine");
  Config cfg = gpt2_config();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  train::export_hf(cfg, model.parameters(), (tmp.path / "hf").string());
  EXPECT_TRUE(fs::exists(tmp.path / "hf" / "model.safetensors"));
  EXPECT_EQ(read_file(tmp.path / "hf.export-tmp" / "notes.txt"), "mine");
  for (const auto& e : fs::directory_iterator(tmp.path))  // nothing staged is left
    EXPECT_TRUE(e.path().filename() == "hf" || e.path().filename() == "hf.export-tmp" ||
                e.path().filename() == "stale")
        << e.path();
}

TEST(HFImport, broken_tokenizer_files_are_refused_before_anything_is_written) {
  TempDir tmp;
  Config cfg = gpt2_config();
  cfg.data.tokenizer = "gpt2";
  cfg.model.vocab_size = 50257;
  tmp.write("encoder.json", "{\"a\": 0}");
  tmp.write("vocab.bpe", "garbage\n");
  cfg.data.tokenizer_dir = tmp.path.string();
  Generator g(1);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const fs::path hf = tmp.path / "hf", ck = tmp.path / "ck";
  train::export_hf(cfg, model.parameters(), hf.string());
  const std::string import = kBin + "/import " + hf.string() + " --output " + ck.string();
  std::string out;
  EXPECT_EQ(run_command(import, &out), 1);
  EXPECT_TRUE(has(out, (hf / "vocab.json").string())) << out;
  EXPECT_FALSE(fs::exists(ck)) << out;
  const char* env = std::getenv("TESSERA_GPT2_DIR");
  const fs::path real = env ? fs::path(env) : fs::path(TESSERA_SOURCE_DIR) / "data/tokenizers/gpt2";
  if (!fs::exists(real / "encoder.json")) GTEST_SKIP() << "no GPT-2 tokenizer files in " << real;
  fs::copy_file(real / "encoder.json", hf / "vocab.json", fs::copy_options::overwrite_existing);
  EXPECT_EQ(run_command(import, &out), 1);
  EXPECT_TRUE(has(out, (hf / "merges.txt").string())) << out;
  EXPECT_FALSE(fs::exists(ck)) << out;
  fs::copy_file(real / "vocab.bpe", hf / "merges.txt", fs::copy_options::overwrite_existing);
  EXPECT_EQ(run_command(import, &out), 0) << out;
  EXPECT_EQ(read_file(ck / "tokenizer" / "vocab.bpe"), read_file(real / "vocab.bpe"));
}

TEST(HFImport, values_tessera_cannot_reproduce_are_errors_naming_the_key_or_tensor) {
  TempDir tmp;
  int n = 0;
  auto fresh = [&](const Config& cfg) {
    const fs::path dir = tmp.path / ("hf" + std::to_string(n++));
    Generator g(1);
    nn::GPT model(train::model_config(cfg.model, cfg.train), g);
    train::export_hf(cfg, model.parameters(), dir.string());
    return dir;
  };
  auto err = [](const fs::path& d) { return error_of([&] { train::import_hf(d.string()); }); };
  fs::path d = fresh(gpt2_config());
  replace_in(d / "config.json", "\"gelu_new\"", "\"relu\"");
  EXPECT_TRUE(has(err(d), "activation_function")) << err(d);
  d = fresh(gpt2_config());
  replace_in(d / "config.json", "\"n_ctx\"", "\"mystery_key\": 1, \"n_ctx\"");
  EXPECT_TRUE(has(err(d), "unsupported key \"mystery_key\"")) << err(d);
  d = fresh(gpt2_config());
  replace_in(d / "config.json", "\"n_inner\": 64", "\"n_inner\": 32");
  std::string m = err(d);
  EXPECT_TRUE(has(m, "transformer.h.0.mlp.c_fc.weight") && has(m, "(16, 64)")) << m;
  d = fresh(llama_config());
  replace_in(d / "config.json", "\"rope_scaling\": null",
             "\"rope_scaling\": {\"rope_type\": \"longrope\", \"factor\": 4}");
  EXPECT_TRUE(has(err(d), "rope_scaling.rope_type") && has(err(d), "longrope")) << err(d);
  d = fresh(llama_config());
  replace_in(d / "config.json", "\"model_type\": \"llama\"", "\"model_type\": \"gemma\"");
  EXPECT_TRUE(has(err(d), "model_type") &&
              has(err(d), "'gemma' is not gpt2, llama, qwen2, qwen3 or mistral"))
      << err(d);
  // architectures names exactly the one class of the model_type.
  for (const char* arch : {"[\"LlamaForCausalLM\", \"LlamaModel\"]", "[\"GPT2LMHeadModel\"]"}) {
    d = fresh(llama_config());
    replace_in(d / "config.json", "[\"LlamaForCausalLM\"]", arch);
    EXPECT_TRUE(has(err(d), "architectures") && has(err(d), "expected [\"LlamaForCausalLM\"]"))
        << arch << ": " << err(d);
  }
  d = fresh(gpt2_config());
  replace_in(d / "config.json", "\"n_ctx\": 8", "\"n_ctx\": 16");
  EXPECT_TRUE(has(err(d), "n_ctx") && has(err(d), "differs from n_positions")) << err(d);
  d = fresh(gpt2_config());
  std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << "[1, 2]";
  EXPECT_TRUE(has(err(d), (d / "config.json").string() + ": not a JSON object")) << err(d);
  // strtod reads these as infinity and 0: numbers no model means, named with their key.
  d = fresh(llama_config());
  replace_in(d / "config.json", "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 1e999");
  EXPECT_TRUE(has(err(d), "rms_norm_eps: 1e999 is outside the range of a double")) << err(d);
  d = fresh(llama_config());
  replace_in(d / "config.json", "\"rope_theta\": 5e+05", "\"rope_theta\": 1e-400");
  EXPECT_TRUE(has(err(d), "rope_theta: 1e-400 is outside the range")) << err(d);
  d = fresh(llama_config());
  SafetensorsFile f = read_safetensors((d / "model.safetensors").string());
  f.tensors.erase(f.tensors.begin() + 3);
  const std::string lost = read_safetensors((d / "model.safetensors").string()).tensors[3].first;
  write_safetensors((d / "model.safetensors").string(), f.tensors);
  EXPECT_TRUE(has(err(d), "missing tensor '" + lost + "'")) << err(d);
}

TEST(HFImport, invalid_model_values_name_the_file_and_the_config_json_key) {
  TempDir tmp;
  struct Case {
    std::string from, to, want;
  };
  // Exports cfg, then edits its config.json case by case; each import must fail naming the keys.
  auto expect_named = [&](const Config& cfg, const std::string& name, const std::vector<Case>& cases) {
    Generator g(1);
    nn::GPT model(train::model_config(cfg.model, cfg.train), g);
    const fs::path d = tmp.path / name;
    train::export_hf(cfg, model.parameters(), d.string());
    const std::string good = read_file(d / "config.json"), file = (d / "config.json").string();
    for (const Case& c : cases) {
      std::ofstream(d / "config.json", std::ios::binary | std::ios::trunc) << good;
      replace_in(d / "config.json", c.from, c.to);
      const std::string m = error_of([&] { train::import_hf(d.string()); });
      EXPECT_TRUE(has(m, file + ": invalid model:") && has(m, c.want)) << c.to << "\n" << m;
    }
    return d;
  };
  const fs::path d = expect_named(gpt2_config(), "hf", {
      {"\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": -1",
       "model.norm_eps must be positive, got -1 (config.json key layer_norm_epsilon)"},
      {"\"n_head\": 2", "\"n_head\": 0", "(config.json key n_head)"},
      {"\"n_head\": 2", "\"n_head\": 3", "(config.json keys n_embd, n_head)"},
      {"\"tessera_tokenizer\": \"byte\"", "\"tessera_tokenizer\": \"gpt2\"",
       "(config.json keys vocab_size, tessera_tokenizer)"},
  });
  // Llama: the rope dict's fields are named under the key they were read from.
  const std::string no_scaling = "\"rope_scaling\": null";
  expect_named(llama_config(), "hf-llama", {
      {no_scaling, "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 0.5}",
       "got 0.5 (config.json key rope_scaling.factor)"},
      {no_scaling, "\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4, "
       "\"beta_fast\": 1, \"beta_slow\": 32}",
       "(config.json keys rope_parameters.beta_fast, rope_parameters.beta_slow)"},
      {"\"rope_theta\": 5e+05", "\"rope_theta\": -1", "(config.json key rope_theta)"},
      {"\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", "(config.json key rms_norm_eps)"},
  });
  const std::string file = (d / "config.json").string();
  // The binary says the same.
  std::string out;
  EXPECT_EQ(run_command(kBin + "/import " + d.string() + " --output " + (tmp.path / "ck").string(), &out),
            1);
  EXPECT_TRUE(has(out, file + ": invalid model:") && has(out, "tessera_tokenizer")) << out;
  EXPECT_FALSE(fs::exists(tmp.path / "ck"));
}

// Keys a Llama config.json may leave out take transformers' LlamaConfig defaults (untied, no
// biases); tessera_block_size needs rope scaling and a positive value; GPT-2's tokenizer files
// count only as a pair.
TEST(HFImport, left_out_keys_take_hf_defaults_and_tessera_keys_are_checked) {
  TempDir tmp;
  auto fresh = [&](const Config& cfg, const std::string& name) {
    const fs::path dir = tmp.path / name;
    Generator g(1);
    nn::GPT model(train::model_config(cfg.model, cfg.train), g);
    train::export_hf(cfg, model.parameters(), dir.string());
    return dir;
  };
  fs::path d = fresh(llama_config(), "defaults");
  for (const char* key : {"tie_word_embeddings", "attention_bias", "mlp_bias"})
    replace_in(d / "config.json", "  \"" + std::string(key) + "\": false,\n", "");
  const train::HFModel m = train::import_hf(d.string());
  EXPECT_FALSE(m.config.model.tie_embeddings);
  EXPECT_FALSE(m.config.model.bias);
  EXPECT_FALSE(m.gpt2_tokenizer_files);
  tmp.write("defaults/vocab.json", "{}");
  EXPECT_FALSE(train::import_hf(d.string()).gpt2_tokenizer_files);  // merges.txt missing
  tmp.write("defaults/merges.txt", "#version: 0.2\n");
  EXPECT_TRUE(train::import_hf(d.string()).gpt2_tokenizer_files);

  d = fresh(llama_config(), "unscaled");
  replace_in(d / "config.json", "\"max_position_embeddings\": 8",
             "\"max_position_embeddings\": 8, \"tessera_block_size\": 16");
  std::string msg = error_of([&] { train::import_hf(d.string()); });
  EXPECT_TRUE(has(msg, "tessera_block_size") && has(msg, "needs a positive value and rope scaling"))
      << msg;
  Config yarn = llama_config();
  yarn.model.rope_scaling.type = "yarn", yarn.model.rope_scaling.factor = 4;
  yarn.model.rope_scaling.original_max_position = 2;
  d = fresh(yarn, "extended");
  replace_in(d / "config.json", "\"tessera_block_size\": 8", "\"tessera_block_size\": 0");
  msg = error_of([&] { train::import_hf(d.string()); });
  EXPECT_TRUE(has(msg, "tessera_block_size") && has(msg, "needs a positive value")) << msg;
}

TEST(HFImport, a_non_finite_weight_is_an_error_naming_the_tensor) {
  TempDir tmp;
  const Config cfg = llama_config();
  Generator g(3);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  for (const float bad : {std::nanf(""), -INFINITY}) {
    const fs::path d = tmp.path / (std::isnan(bad) ? "nan" : "inf");
    train::export_hf(cfg, model.parameters(), d.string());
    const std::string file = (d / "model.safetensors").string();
    SafetensorsFile f = read_safetensors(file);
    Tensor& t = f.tensors[2].second;
    std::vector<float> v = t.to_vector<float>();
    v[5] = bad;
    const std::string name = f.tensors[2].first;
    t = from_vector<float>(v, t.shape());
    write_safetensors(file, f.tensors);
    const std::string m = error_of([&] { train::import_hf(d.string()); });
    EXPECT_TRUE(has(m, file + ": tensor '" + name + "' holds 1 non-finite value") &&
                has(m, "at flat index 5")) << m;
    // --init hf:DIR reads through import_hf.
    Generator h(4);
    nn::GPT b(train::model_config(cfg.model, cfg.train), h);
    const std::string n = error_of(
        [&] { train::load_hf_into("hf:" + d.string(), cfg.model, b.parameters()); });
    EXPECT_TRUE(has(n, "'" + name + "' holds 1 non-finite value")) << n;
  }
}

TEST(HFImport, reads_base_model_names_and_mask_buffers) {
  // As in the published gpt2 files: names without "transformer.", causal-mask buffers
  // "h.N.attn.bias" (F16 widening is tests/checkpoint/test_safetensors.cpp's).
  TempDir tmp;
  const Config cfg = gpt2_config();
  Generator g(4);
  nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const fs::path d = tmp.path / "hf";
  train::export_hf(cfg, model.parameters(), d.string());
  SafetensorsFile f = read_safetensors((d / "model.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> renamed;
  for (auto& [name, t] : f.tensors) renamed.emplace_back(name.substr(name.find('.') + 1), t);
  renamed.emplace_back("h.0.attn.bias", ones({1, 1, 8, 8}));
  write_safetensors((d / "model.safetensors").string(), renamed);
  const train::HFModel back = train::import_hf(d.string());
  ASSERT_EQ(back.params.size(), model.parameters().size());
  for (size_t i = 0; i < back.params.size(); ++i) {
    EXPECT_EQ(back.params[i].first, model.parameters()[i].first);
    EXPECT_EQ(tessera::testing::bytes(back.params[i].second),
              tessera::testing::bytes(model.parameters()[i].second));
  }
}

TEST(HFImport, init_from_an_hf_directory_loads_the_same_weights) {
  TempDir tmp;
  const Config cfg = llama_config();
  Generator g(5), h(6);
  nn::GPT a(train::model_config(cfg.model, cfg.train), g);
  nn::GPT b(train::model_config(cfg.model, cfg.train), h);
  train::export_hf(cfg, a.parameters(), (tmp.path / "hf").string());
  train::load_hf_into("hf:" + (tmp.path / "hf").string(), cfg.model, b.parameters());
  for (size_t i = 0; i < a.parameters().size(); ++i)
    EXPECT_EQ(tessera::testing::bytes(a.parameters()[i].second),
              tessera::testing::bytes(b.parameters()[i].second)) << a.parameters()[i].first;
  ModelConfig other = cfg.model;
  other.n_layer = 3;
  Generator k(7);
  nn::GPT c(train::model_config(other, cfg.train), k);
  const std::string m = error_of(
      [&] { train::load_hf_into("hf:" + (tmp.path / "hf").string(), other, c.parameters()); });
  EXPECT_TRUE(has(m, "model.n_layer: 2 vs 3")) << m;
}

// scripts/check_export.py and scripts/hf_logits.py against tessera, for both architectures. The
// reader needs numpy and h5py (setup.sh installs them); the logits check also torch (setup.sh
// tests).
TEST(HFExport, independent_reader_and_hf_structured_pytorch_agree) {
  std::string out;
  if (run_command("/usr/bin/python3 -c 'import numpy, h5py'", &out) != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks numpy or h5py: " << out;
  const bool torch = run_command("/usr/bin/python3 -c 'import torch'", &out) == 0;
  if (!torch) std::printf("no torch for /usr/bin/python3: hf_logits.py is not run\n");
  TempDir tmp;
  Config yarn = llama_config(), llama3 = llama_config();
  yarn.model.rope_scaling.type = "yarn", yarn.model.rope_scaling.factor = 4;
  llama3.model.rope_scaling.type = "llama3", llama3.model.rope_scaling.factor = 8;
  llama3.model.rope_scaling.original_max_position = 4;  // some wavelengths on each side of L0
  // Trained past L0, as configs/extend-context.yaml leaves a model. theta 100 and L0 16 put
  // YaRN's ramp over pairs 0..1 (L0 = 64 would put it over 0..3): a config.json naming the wrong
  // L0 changes the logits.
  Config extended = yarn;
  extended.model.block_size = 64, extended.model.rope_theta = 100;
  extended.model.rope_scaling.original_max_position = 16;
  for (const Config& cfg :
       {gpt2_config(), llama_config(), yarn, llama3, extended, qwen3_config(), qwen2_config()}) {
    const std::string name = cfg.model.norm + "-" + cfg.model.rope_scaling.type + "-" +
                             std::to_string(cfg.model.rope_scaling.original_max_position) +
                             (cfg.model.qk_norm ? "-qk" : "") + (cfg.model.qkv_bias ? "-qkvb" : "");
    const fs::path ck = save_random(cfg, tmp.path / ("ck-" + name));
    const std::string hf = (tmp.path / ("hf-" + name)).string();
    const std::string ref = (tmp.path / ("ref-" + name + ".safetensors")).string();
    ASSERT_EQ(export_with_logits(ck, hf, ref, &out), 0) << out;
    EXPECT_EQ(run_script("check_export.py", hf + " " + ck.string(), &out), 0) << out;
    if (!torch) continue;
    // Default tolerance 1e-4 of the largest logit: the PyTorch side computes in float64, so the
    // difference is tessera's f32 rounding through two layers (measured 2e-7 to 4e-6 of it).
    EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 0) << out;
    std::printf("%s", out.c_str());
    if (cfg.model.rope_scaling.type == "yarn") {
      // The comparison sees the scaling: another factor in config.json makes it fail.
      replace_in(fs::path(hf) / "config.json", "\"factor\": 4", "\"factor\": 2");
      EXPECT_EQ(run_script("hf_logits.py", hf + " " + ref, &out), 1) << out;
    }
  }
}
