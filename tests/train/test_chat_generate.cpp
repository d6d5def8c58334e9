// build/generate and build/eval --answers under a chat template (data/chat.h), on a model whose
// greedy continuation is known: the prompt sent as a user's message with the assistant's header,
// the reply ending at the end of turn, the checkpoint's data.chat_template the default, and the
// flags that do not fit refused before the model loads.
#include <gtest/gtest.h>

#include <string>

#include "config/expect_contains.h"
#include "data/chat.h"
#include "data/tiny_hf_tokenizer.h"
#include "test_util.h"
#include "train/answer_fixture.h"
#include "train/answers.h"
#include "train/samples.h"
#include "train/train_fixture.h"

namespace tessera {
namespace {

using testing::run_command;

// The answer model on the chat tokenizer (tiny_hf_tokenizer.h): after "\n" (the end of ChatML's
// assistant header) it writes "ok" and <|im_end|> (264); after "\n\n" (261, the end of Qwen3's
// empty reasoning block) "OK" and <|endoftext|> (262).
struct ChatModel {
  testing::TinyHf tokenizer{testing::chat_tokenizer()};
  Config cfg = testing::chain_model_config();
  ChatModel() {
    cfg.model.vocab_size = 271;
    cfg.data.tokenizer = "hf";
    cfg.data.tokenizer_dir = tokenizer.dir.path.string();
  }
  std::string save(const std::string& run) const {
    const nn::GPT model = testing::chain_model(
        cfg, 3, {{'\n', 'o'}, {'o', 'k'}, {'k', 264}, {261, 'O'}, {'O', 'K'}, {'K', 262}});
    return testing::save_weights(model, cfg, tokenizer.dir.path / run);
  }
};

// Standard output alone (run_command hands stderr back too).
int stdout_of(const std::string& cmd, std::string* out) {
  return run_command("{ " + cmd + " 2>/dev/null; }", out);
}

TEST(ChatGenerate, the_prompt_is_a_users_message_and_the_reply_ends_at_the_end_of_turn) {
  ChatModel m;
  const std::string generate = testing::bin_dir() + "/generate --checkpoint " + m.save("run") +
                               " --temperature 0 --max-new-tokens 8";
  std::string out;
  ASSERT_EQ(stdout_of(generate + " --prompt-style chatml --prompt Hi", &out), 0) << out;
  EXPECT_EQ(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nok\n");
  ASSERT_EQ(
      stdout_of(generate + " --prompt-style qwen3 --no-think --system 'Be brief.' --prompt Hi",
                &out),
      0)
      << out;
  EXPECT_EQ(out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\nOK\n");
  // Without a template the markers are not there, and the reply is the model's random walk.
  ASSERT_EQ(stdout_of(generate + " --prompt Hi", &out), 0) << out;
  EXPECT_EQ(out.find("<|im_start|>"), std::string::npos) << out;

  // A file: its conversations less their last reply, which is printed back.
  const std::string file =
      m.tokenizer.dir.write("chat.jsonl",
                            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
                            "{\"role\": \"assistant\", \"content\": \"ok\"}]}\n"
                            "{\"prompt\": \"p\"}\n");
  ASSERT_EQ(stdout_of(generate + " --prompt-style chatml --prompts " + file, &out), 0) << out;
  EXPECT_EQ(out,
            "{\"prompt\": \"<|im_start|>user\\nq<|im_end|>\\n<|im_start|>assistant\\n\", "
            "\"completion\": \"ok\", \"response\": \"ok\"}\n"
            "{\"prompt\": \"<|im_start|>user\\np<|im_end|>\\n<|im_start|>assistant\\n\", "
            "\"completion\": \"ok\"}\n");

  auto refused = [&](const std::string& flags, const std::string& want) {
    EXPECT_EQ(run_command(generate + " " + flags, &out), 1) << flags;
    EXPECT_CONTAINS(out, want) << flags;
  };
  refused("--prompts " + file,
          file +
              ": example 1 is a conversation (\"messages\"): give --prompt-style chatml, qwen3, "
              "llama3, llama2 or mistral");
  refused("--prompt-style vicuna --prompt x",
          "--prompt-style must be plain, alpaca, chatml, qwen3, llama3, llama2 or mistral, got "
          "'vicuna'");
  refused("--prompt-style chatml --no-think --prompt x",
          "--no-think goes with the qwen3 template, not --prompt-style chatml");
  refused("--system x --prompt y", "--system and --no-think go with a chat template");
  refused("--prompt-style llama3 --bos --prompt x", "--bos and --prompt-style llama3");
  refused("--prompt-style chatml", "--prompt-style chatml needs --prompt, the user's message");
  // The template's markers must be the tokenizer's: llama3's are, a byte model's are not.
  ASSERT_EQ(stdout_of(generate + " --prompt-style llama3 --prompt Hi", &out), 0) << out;
  EXPECT_EQ(
      out.rfind("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", 0), 0u)
      << out;
}

// A checkpoint tuned in a template (data.chat_template) generates and answers in it by default.
TEST(ChatGenerate, the_checkpoints_template_is_the_default_for_generate_and_answers) {
  ChatModel m;
  m.cfg.data.chat_template = "chatml";
  const std::string ck = m.save("tuned");
  std::string out;
  const std::string generate =
      testing::bin_dir() + "/generate --checkpoint " + ck + " --temperature 0 --prompt Hi";
  ASSERT_EQ(stdout_of(generate, &out), 0) << out;
  EXPECT_EQ(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nok\n");
  ASSERT_EQ(stdout_of(generate + " --prompt-style plain", &out), 0) << out;
  EXPECT_EQ(out.find("<|im_start|>"), std::string::npos) << out;
  EXPECT_EQ(run_command(generate + " --bos", &out), 1);
  EXPECT_CONTAINS(out, "--bos and the chat template chatml (" + ck +
                           "'s data.chat_template; --prompt-style plain for none)");

  // Two of three answers right ("ok" twice), all three of the file's responses' form.
  const std::string items = m.tokenizer.dir.write(
      "answers.jsonl",
      "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", "
      "\"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n"
      "{\"prompt\": \"p\", \"response\": \"ok\"}\n"
      "{\"prompt\": \"x\", \"response\": \"no\"}\n");
  ASSERT_EQ(
      stdout_of(testing::bin_dir() + "/eval --checkpoint " + ck + " --answers " + items, &out), 0)
      << out;
  EXPECT_CONTAINS(out, "exact 0.6667 | formed 1.0000 (3 items of " + items);
  // --prompt-style overrides it: plain prompts end with 'q', 'p' and 'x', which the model does not
  // continue with "ok"; the conversation cannot be sent plain.
  const std::string plain = m.tokenizer.dir.write(
      "plain.jsonl",
      "{\"prompt\": \"p\", \"response\": \"ok\"}\n{\"prompt\": \"x\", \"response\": \"no\"}\n");
  ASSERT_EQ(stdout_of(testing::bin_dir() + "/eval --checkpoint " + ck +
                          " --prompt-style plain --answers " + plain,
                      &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "exact 0.0000");
  EXPECT_EQ(run_command(testing::bin_dir() + "/eval --checkpoint " + ck +
                            " --prompt-style plain --answers " + items,
                        &out),
            1);
  EXPECT_CONTAINS(out,
                  items + ": example 1 is a conversation (\"messages\"): it needs a chat template");
  EXPECT_EQ(run_command(testing::bin_dir() + "/eval --checkpoint " + ck +
                            " --prompt-style alpaca --answers " + items,
                        &out),
            1);
  EXPECT_CONTAINS(
      out, "--prompt-style must be plain, chatml, qwen3, llama3, llama2 or mistral, got 'alpaca'");
  const std::string ended = m.tokenizer.dir.write(
      "ended.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n");
  EXPECT_EQ(
      run_command(testing::bin_dir() + "/eval --checkpoint " + ck + " --answers " + ended, &out),
      1);
  EXPECT_CONTAINS(out, ended + ": example 1 ends with no assistant message to compare an answer");
}

// Training samples (log.sample_prompt) under data.chat_template: the prompt a user's message, the
// sample ending at the end of turn; log.sample_bos does not go with a template.
TEST(ChatGenerate, training_samples_send_their_prompt_in_the_template) {
  ChatModel m;
  m.cfg.data.chat_template = "chatml";
  m.cfg.log.sample_prompt = "Hi";
  m.cfg.log.sample_tokens = 8;
  const nn::GPT model = testing::chain_model(m.cfg, 3, {{'\n', 'o'}, {'o', 'k'}, {'k', 264}});
  EXPECT_EQ(train::TrainingSamples(m.cfg).draw(model, 1),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nok");
  m.cfg.log.sample_bos = true;
  EXPECT_CONTAINS(testing::error_of([&] { m.cfg.validate(); }),
                  "log.sample_bos and data.chat_template 'chatml': the template writes what "
                  "starts a sample's prompt");
}

// --chat: a message a line of standard input, each reply drawn from the whole conversation so
// far (the counts on standard error are the conversation's tokens as encode_chat writes it).
TEST(ChatGenerate, chat_answers_each_line_from_the_whole_conversation) {
  ChatModel m;
  const std::string ck = m.save("run");
  const std::string generate = testing::bin_dir() + "/generate --checkpoint " + ck +
                               " --temperature 0 --max-new-tokens 8 --prompt-style chatml";
  std::string out;
  ASSERT_EQ(stdout_of("printf 'Hi\\n\\nAgain\\n' | " + generate + " --chat --system S", &out), 0)
      << out;
  EXPECT_EQ(out, "ok\nok\n");
  // Standard error alone.
  ASSERT_EQ(run_command("{ { printf 'Hi\\nAgain\\n' | " + generate +
                            " --chat --system S; } 2>&1 >/dev/null; }",
                        &out),
            0)
      << out;
  const auto tok = data::make_tokenizer("hf", m.cfg.data.tokenizer_dir);
  using Chat = std::vector<data::ChatMessage>;
  const Chat first = {{"system", "S"}, {"user", "Hi"}};
  Chat second = first;
  second.push_back({"assistant", "ok"});
  second.push_back({"user", "Again"});
  const size_t a = data::encode_chat_prompt(*tok, data::ChatTemplate::ChatML, first).ids.size();
  const size_t b = data::encode_chat_prompt(*tok, data::ChatTemplate::ChatML, second).ids.size();
  EXPECT_CONTAINS(out, "(" + std::to_string(a) + " tokens of conversation, 3 drawn)\n(" +
                           std::to_string(b) + " tokens of conversation, 3 drawn)\n");
  EXPECT_EQ(run_command(generate + " --chat --prompt x", &out), 1);
  EXPECT_CONTAINS(out, "--chat reads its messages from standard input, one reply each");
  EXPECT_EQ(run_command(testing::bin_dir() + "/generate --checkpoint " + ck + " --chat", &out), 1);
  EXPECT_CONTAINS(out, "--chat needs a chat template");
}

// eval.answers_bos (eval --answers --bos): plain prompts after the beginning-of-text id, as
// tokenize --format sft --bos starts examples; not beside a chat template, which writes its own.
TEST(ChatGenerate, answers_bos_starts_each_plain_prompt) {
  ChatModel m;
  const auto tok = data::make_tokenizer("hf", m.cfg.data.tokenizer_dir);
  const train::AnswerSet set({{"p", "ok"}}, *tok, "a.jsonl", std::nullopt, true);
  EXPECT_EQ(set.prompts[0].ids, (std::vector<uint32_t>{267, 'p'}));  // <|begin_of_text|>
  EXPECT_EQ(set.prompts[0].hidden, 1u);
  EXPECT_CONTAINS(
      testing::error_of([&] {
        train::AnswerSet({{"p", "ok"}}, *tok, "a.jsonl", data::ChatTemplate::ChatML, true);
      }),
      "a.jsonl: a beginning-of-text id and a chat template");
  const auto bytes = data::make_tokenizer("byte");
  EXPECT_CONTAINS(testing::error_of([&] {
                    train::AnswerSet({{"p", "ok"}}, *bytes, "a.jsonl", std::nullopt, true);
                  }),
                  "a.jsonl: the byte tokenizer has no beginning-of-text token");
  m.cfg.eval.answers_bos = true, m.cfg.data.chat_template = "llama3";
  EXPECT_CONTAINS(testing::error_of([&] { m.cfg.validate(); }),
                  "eval.answers_bos and data.chat_template 'llama3'");
  std::string out;
  EXPECT_EQ(
      run_command(testing::bin_dir() + "/eval --checkpoint " + m.save("run") + " --bos", &out), 1);
  EXPECT_CONTAINS(out, "--prompt-style and --bos go with --answers");
}

}  // namespace
}  // namespace tessera
