// Fine-tuning an imported instruct-style model on conversations, end to end through the binaries:
// a Qwen3-shaped model whose tokenizer has the chat markers exported and imported, conversations
// tokenized in Qwen3's template (tokenize --chat-template qwen3), LoRA trained on them with
// data.chat_template, and the tuned checkpoint answering a new message in the template.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>
#include <string>

#include "data/tiny_hf_tokenizer.h"
#include "hf/hf_fixture.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/hf_dir.h"
#include "train/options.h"
#include "train/trainer.h"

using namespace tessera;
using namespace tessera::testing::hf;
using tessera::testing::run_command;
using tessera::testing::TempDir;
namespace fs = std::filesystem;

// Every reply of the set is "ok": after 200 LoRA steps the tuned model writes it, and its end of
// turn, after a message it never saw, and answers eval --answers' conversations so; the base
// model, fresh from its initialisation, does not. The embedding and norms train beside the adapters
// (lora.trainable): a fresh model's embedding, at its initial scale and frozen, makes no id much
// likelier than another whatever the adapters do (the loss stays near ln 271).
TEST(HFChat, a_lora_on_an_imported_qwen3_learns_replies_in_its_template) {
  TempDir tmp;
  const tessera::testing::TinyHf tok{tessera::testing::chat_tokenizer()};
  Config cfg = qwen3_config();
  cfg.model.vocab_size = 271, cfg.model.block_size = 32;
  cfg.data.tokenizer = "hf", cfg.data.tokenizer_dir = tok.dir.path.string();
  Generator g(1);
  const nn::GPT model(train::model_config(cfg.model, cfg.train), g);
  const fs::path hf = tmp.path / "hf", base = tmp.path / "base";
  train::export_hf(cfg, model.parameters(), hf.string());
  std::string out;
  ASSERT_EQ(run_command(kBin + "/import " + hf.string() + " --output " + base.string(), &out), 0)
      << out;

  std::string lines;
  for (int i = 0; i < 40; ++i)
    lines += "{\"messages\": [{\"role\": \"user\", \"content\": \"word " + std::to_string(i) +
             "\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n";
  const std::string chats = tmp.write("chats.jsonl", lines);
  const fs::path data = tmp.path / "data";
  ASSERT_EQ(
      run_command(kBin + "/tokenize --format sft --tokenizer hf --tokenizer-dir " + hf.string() +
                      " --chat-template qwen3 --input " + chats + " --output " + data.string(),
                  &out),
      0)
      << out;

  Config ft = cfg;
  ft.data.tokenizer_dir = (base / "tokenizer").string();
  ft.data.train = (data / "train_*.bin").string(), ft.data.val = (data / "val_*.bin").string();
  ft.data.chat_template = "qwen3";
  ft.checkpoint.init = base.string(), ft.checkpoint.dir = (tmp.path / "runs").string();
  ft.checkpoint.interval = 0;
  ft.lora.rank = 8, ft.lora.alpha = 32, ft.lora.targets = "all", ft.lora.trainable = "embed,norm";
  ft.optim.lr = 3e-2, ft.optim.min_lr = 3e-3, ft.optim.weight_decay = 0, ft.optim.warmup_steps = 5;
  ft.train.batch_size = 8, ft.train.max_steps = 200, ft.train.run_name = "chat";
  ft.eval.interval = 200, ft.eval.steps = 1, ft.log.interval = 1000;
  std::ostringstream log;
  train::run_training(ft, log);

  // A message outside the set, with Qwen3's non-thinking prompt; the tuned checkpoint speaks the
  // template by default.
  const std::string ask = " --temperature 0 --max-new-tokens 6 --no-think --prompt 'word 99'";
  const std::string prompt =
      "<|im_start|>user\nword 99<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
  ASSERT_EQ(run_command(kBin + "/generate 2>/dev/null --checkpoint " +
                            (tmp.path / "runs/chat").string() + ask,
                        &out),
            0)
      << out;
  EXPECT_EQ(out, prompt + "ok\n") << log.str();
  ASSERT_EQ(run_command(kBin + "/generate 2>/dev/null --prompt-style qwen3 --checkpoint " +
                            base.string() + ask,
                        &out),
            0)
      << out;
  EXPECT_NE(out, prompt + "ok\n");
  const std::string answers = tmp.write(
      "answers.jsonl",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"word 77\"}, {\"role\": "
      "\"assistant\", \"content\": \"ok\"}]}\n{\"prompt\": \"word 78\", \"response\": \"ok\"}\n");
  ASSERT_EQ(run_command(kBin + "/eval 2>/dev/null --checkpoint " +
                            (tmp.path / "runs/chat").string() + " --answers " + answers,
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("exact 1.0000 | formed 1.0000 (2 items"), std::string::npos) << out;
}
