// A throwaway run directory with a tiny byte-level corpus, and the config of a tiny model that
// trains on it in well under a second per 10 steps; shared by the training-loop tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/json.h"
#include "checkpoint/retention.h"  // checkpoint_name
#include "config/config.h"
#include "core/rng.h"
#include "data/bpe.h"  // spell
#include "data/sft.h"
#include "data/shard.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/trainer.h"

namespace tessera::testing {

struct TempRun {
  TempDir tmp{"tessera_train"};
  const std::filesystem::path dir = tmp.path;
  TempRun() {
    // A byte-level corpus with structure to learn: a short verse repeated with variations.
    std::vector<uint32_t> train, val;
    const std::string verse = "in the beginning was the word, and the word was with the light. ";
    for (int r = 0; r < 40; ++r)
      for (char c : verse) train.push_back(uint8_t(c == ' ' && r % 3 == 0 ? '_' : c));
    for (char c : verse + verse + verse) val.push_back(uint8_t(c));
    data::write_shard((dir / "train_000.bin").string(), train, 257);
    data::write_shard((dir / "val_000.bin").string(), val, 257);
  }

  Config config(int64_t steps) const {
    Config c;
    c.model.n_layer = 2, c.model.n_head = 2, c.model.n_embd = 32, c.model.block_size = 16;
    c.data.train = (dir / "train_*.bin").string();
    c.data.val = (dir / "val_*.bin").string();
    c.train.batch_size = 8, c.train.max_steps = steps, c.train.run_name = "run";
    c.optim.lr = 3e-3, c.optim.min_lr = 3e-4, c.optim.warmup_steps = 5;
    c.eval.interval = steps, c.eval.steps = 2;
    c.checkpoint.dir = (dir / "ckpt").string(), c.checkpoint.interval = 0;
    c.log.interval = 1000;
    return c;
  }
};

// A model's weights saved as the step-1 checkpoint of a run directory dir (created) with cfg as
// its config; returns the file.
inline std::string save_weights(const nn::GPT& model, const Config& cfg,
                                const std::filesystem::path& dir) {
  CheckpointData ck;
  for (const auto& [name, t] : model.parameters()) ck.model.emplace_back(name, t);
  ck.trainer_ints = {{"step", 1}};
  ck.config_yaml = to_yaml(cfg);
  std::filesystem::create_directories(dir);
  const std::string file = (dir / checkpoint_name(1)).string();
  save_checkpoint(file, ck);
  return file;
}

// Example i's prompt letters: `letters` lowercase ones drawn by Philox under `seed`.
inline std::string random_letters(int i, int letters, uint64_t seed) {
  std::string s;
  for (int k = 0; k < letters; ++k)
    s += char('a' + philox4x32_10(uint64_t(i * letters + k), seed, 0).v[0] % 26);
  return s;
}

// The examples as tokenize --format sft writes them (byte tokenizer) into dir/<split>_000.bin and
// its loss mask, for each of `splits`. Returns the mask.
inline std::vector<uint8_t> write_examples(const std::filesystem::path& dir,
                                           const std::vector<data::SftExample>& examples,
                                           std::initializer_list<const char*> splits) {
  const auto tok = data::make_tokenizer("byte");
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  for (const data::SftExample& e : examples) data::append_sft_example(*tok, e, tokens, mask);
  for (const char* split : splits) {
    const std::string path = (dir / (std::string(split) + "_000.bin")).string();
    data::write_shard(path, tokens, 257);
    data::write_loss_mask(data::loss_mask_path(path), mask);
  }
  return mask;
}

// Supervised fine-tuning data (tokenize --format sft): n examples into dir/<split>_000.bin and
// its loss mask. A prompt is 8 random lowercase letters (Philox under `seed`) and a colon, its
// response "ok", then the end of text: 12 tokens, the last 3 scored. A response is certain given
// its colon; a prompt's letters are not predictable at all (ln 26 = 3.26 nats each). Returns the
// count of scored targets (mask 1 past the first token).
inline int64_t write_sft_examples(const std::filesystem::path& dir, const std::string& split, int n,
                                  uint64_t seed) {
  std::vector<data::SftExample> examples;
  for (int i = 0; i < n; ++i) examples.push_back({random_letters(i, 8, seed) + ":", "ok"});
  const std::vector<uint8_t> mask = write_examples(dir, examples, {split.c_str()});
  int64_t scored = 0;
  for (size_t i = 1; i < mask.size(); ++i) scored += mask[i] & data::kMaskScored;
  return scored;
}

// Preference pairs (tokenize --format pairs, run as a user runs it): n prompts of 8 random letters
// (Philox under seed 3) and a colon, each answered "ok" (chosen) and "no" (rejected), written
// into dir/pairs/{train,val}_000.bin with their loss masks, the last fifth of the pairs in val.
inline void write_preference_pairs(const std::filesystem::path& dir, int n) {
  const std::filesystem::path jsonl = dir / "pairs.jsonl";
  std::ofstream out(jsonl);
  for (int i = 0; i < n; ++i)
    out << "{\"prompt\": \"" << random_letters(i, 8, 3)
        << ":\", \"chosen\": \"ok\", \"rejected\": \"no\"}\n";
  out.close();
  std::string text;
  const int rc = run_command(bin_dir() + "/tokenize --tokenizer byte --format pairs --input " +
                                 jsonl.string() + " --output " + (dir / "pairs").string() +
                                 " --val-fraction 0.2 2>&1",
                             &text);
  ASSERT_EQ(rc, 0) << text;
}

// Examples whose answers differ in length, so rows score different numbers of targets: n
// examples "xyz:" -> "xyz" repeated 1 to 5 times (by the first letter; Philox under `seed`), into
// dir/train_000.bin and dir/val_000.bin (the same examples) with their loss masks. 4 to 16 tokens
// of an example are scored; windows of T = 16 cut those over 17 tokens at their start.
inline void write_varied_sft_examples(const std::filesystem::path& dir, int n, uint64_t seed) {
  std::vector<data::SftExample> examples;
  for (int i = 0; i < n; ++i) {
    const std::string prompt = random_letters(i, 3, seed);
    std::string response;
    for (int k = 0; k <= (prompt[0] - 'a') % 5; ++k) response += prompt;
    examples.push_back({prompt + ":", response});
  }
  write_examples(dir, examples, {"train", "val"});
}

// The run of c stopped after `stop_after` steps and resumed (checkpoint.resume auto), under the run
// name "split": what the same run in one piece must equal. Returns the resumed run's result.
inline train::TrainResult run_split(Config c, int64_t stop_after, std::ostream& log) {
  c.train.run_name = "split";
  c.train.stop_after = stop_after;
  train::run_training(c, log);
  c.train.stop_after = 0;
  c.checkpoint.resume = "auto";
  return train::run_training(c, log);
}

// The values of `key` in the lines of a metrics.jsonl that have it, keyed by step (a later line
// for the same step, e.g. after a rollback, overwrites). Values are kept as the text written.
inline std::map<int64_t, std::string> metric(const std::filesystem::path& file,
                                             const std::string& key) {
  std::map<int64_t, std::string> out;
  std::ifstream in(file);
  std::string line;
  auto field = [&](const std::string& k) -> std::string {
    const std::string tag = "\"" + k + "\": ";
    size_t i = line.find(tag);
    if (i == std::string::npos) return "";
    i += tag.size();
    size_t j = line.find_first_of(",}", i);
    return line.substr(i, j - i);
  };
  while (std::getline(in, line)) {
    const std::string v = field(key);
    if (!v.empty()) out[std::stoll(field("step"))] = v;
  }
  return out;
}

// The samples (log.sample_interval) in a metrics.jsonl, keyed by step, parsed as JSON.
inline std::map<int64_t, std::string> samples_in(const std::filesystem::path& file) {
  std::map<int64_t, std::string> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const Json j = parse_json(line, file.string());
    if (const Json* s = j.get("sample")) out[j.at("step").as_int()] = s->str();
  }
  return out;
}

// The same values as numbers, in step order.
inline std::vector<double> metric_values(const std::filesystem::path& file,
                                         const std::string& key) {
  std::vector<double> out;
  for (const auto& [step, v] : metric(file, key)) out.push_back(std::stod(v));
  return out;
}

// Copies checkpoint `file` and its digest file into `dir`, replacing files of those names.
inline void copy_checkpoint(const std::filesystem::path& file, const std::filesystem::path& dir) {
  for (const std::filesystem::path& f : {file, std::filesystem::path(file.string() + ".sha256")})
    std::filesystem::copy_file(f, dir / f.filename(),
                               std::filesystem::copy_options::overwrite_existing);
}

// What a crash between the two renames of a save that replaces dir/name leaves: the old bytes
// under the name, beside the digest file of the new bytes `resaved`, which lie complete in
// name.tmp. (Saved first under the same name in dir/../scratch, so its digest file names `name`.)
inline void leave_interrupted_resave(const std::filesystem::path& dir, const std::string& name,
                                     const CheckpointData& resaved) {
  const std::filesystem::path scratch = dir.parent_path() / "scratch";
  std::filesystem::create_directories(scratch);
  save_checkpoint((scratch / name).string(), resaved);
  std::filesystem::copy_file(scratch / name, dir / (name + ".tmp"));
  std::filesystem::copy_file(scratch / (name + ".sha256"), dir / (name + ".sha256"),
                             std::filesystem::copy_options::overwrite_existing);
}

// A validation shard of `tokens` letters, long_val_000.bin in run.dir; returns its glob.
inline std::string long_val(const TempRun& run, size_t tokens) {
  std::vector<uint32_t> val(tokens);
  for (size_t i = 0; i < val.size(); ++i) val[i] = uint32_t('a' + (i * 7) % 26);
  data::write_shard((run.dir / "long_val_000.bin").string(), val, 257);
  return (run.dir / "long_val_*.bin").string();
}

// All lines of a metrics.jsonl that contain `text`.
inline std::vector<std::string> metric_lines(const std::filesystem::path& file,
                                             const std::string& text) {
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.find(text) != std::string::npos) out.push_back(line);
  return out;
}

// Documents that start with a beginning-of-text id, and a tokenizer that has one: a byte-level
// tokenizer.json in run.dir/tok (the 256 bytes, then <|end_of_text|> 256 and <|begin_of_text|>
// 257) and shards of vocabulary 258 beside it, 50 documents each the id, "q" and 6 letters. Returns
// the config that trains `steps` steps on them (the hf tokenizer, vocabulary 258).
inline Config bos_documents_config(const TempRun& run, int64_t steps) {
  const std::filesystem::path dir = run.dir / "tok";
  std::filesystem::create_directories(dir);
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    for (char c : data::spell(std::string(1, char(b)))) {
      if (c == '"' || c == '\\') spelled += '\\';
      spelled += c;
    }
    vocab += (b ? ", \"" : "\"") + spelled + "\": " + std::to_string(b);
  }
  std::ofstream(dir / "tokenizer.json")
      << R"({"added_tokens": [{"id": 256, "content": "<|end_of_text|>", "special": true},)"
      << R"( {"id": 257, "content": "<|begin_of_text|>", "special": true}], "normalizer": null,)"
      << R"( "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},)"
      << R"( "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE",)"
      << R"( "dropout": null, "unk_token": null, "continuing_subword_prefix": "",)"
      << R"( "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,)"
      << R"( "ignore_merges": false, "vocab": {)" << vocab << R"(}, "merges": []}})";
  // Shards written for this vocabulary of 258 (the loader refuses the byte tokenizer's 257 here).
  std::vector<uint32_t> tokens;
  for (int i = 0; i < 50; ++i) {
    tokens.push_back(257), tokens.push_back('q');
    for (int j = 0; j < 6; ++j) tokens.push_back(uint32_t('a' + (i * 7 + j) % 26));
  }
  data::write_shard((dir / "train_000.bin").string(), tokens, 258);
  data::write_shard((dir / "val_000.bin").string(), tokens, 258);
  Config cfg = run.config(steps);
  cfg.data.tokenizer = "hf", cfg.data.tokenizer_dir = dir.string();
  cfg.data.train = (dir / "train_*.bin").string(), cfg.data.val = (dir / "val_*.bin").string();
  cfg.model.vocab_size = 258;
  return cfg;
}

}  // namespace tessera::testing
