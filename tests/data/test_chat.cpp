// Chat templates (data/chat.h) on a hand-made tokenizer whose markers are added tokens: each
// template's layout as its model's Jinja template writes it (the expected texts below are those
// templates rendered by hand; tests/scripts/chat_template_reference.sh renders them with a Jinja
// implementation and compares ids with Hugging Face's tokenizer), the markers as their ids, the
// text between two markers encoded as one string, the assistant's ids scored, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "config/expect_contains.h"
#include "data/chat.h"
#include "data/sft.h"
#include "data/shard.h"
#include "test_util.h"
#include "tiny_hf_tokenizer.h"

using namespace tessera;
using namespace tessera::data;
using tessera::testing::chat_tokenizer;
using tessera::testing::error_of;
using tessera::testing::TinyHf;
using Ids = std::vector<uint32_t>;
using Chat = std::vector<ChatMessage>;

namespace {

// Expected ids: a part that is a marker's text is its id, any other part is encoded whole.
Ids ids_of(const Tokenizer& tok, const std::vector<std::string>& parts) {
  Ids out;
  for (const std::string& p : parts) {
    if (const auto id = tok.added_token(p)) {
      out.push_back(*id);
    } else {
      const Ids text = tok.encode(p);
      out.insert(out.end(), text.begin(), text.end());
    }
  }
  return out;
}

// The text of each run of scored ids, in order.
std::vector<std::string> scored_runs(const Tokenizer& tok, const ChatIds& c) {
  std::vector<std::string> runs;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    if (!c.scored[i]) continue;
    if (i == 0 || !c.scored[i - 1]) runs.emplace_back();
    runs.back() += tok.decode({c.ids[i]});
  }
  return runs;
}

std::string text_of(const Tokenizer& tok, const ChatIds& c) { return tok.decode(c.ids); }

}  // namespace

TEST(ChatTemplate, chatml_writes_each_message_between_its_markers) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const ChatIds c = encode_chat(tok, ChatTemplate::ChatML,
                                {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}});
  EXPECT_EQ(c.ids, ids_of(tok, {"<|im_start|>", "system\nBe brief.", "<|im_end|>", "\n",
                                "<|im_start|>", "user\nHi", "<|im_end|>", "\n", "<|im_start|>",
                                "assistant\nHello!", "<|im_end|>", "\n"}));
  EXPECT_EQ(text_of(tok, c),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  ASSERT_EQ(c.scored.size(), c.ids.size());
  EXPECT_EQ(scored_runs(tok, c), (std::vector<std::string>{"Hello!<|im_end|>"}));

  const ChatIds p =
      encode_chat(tok, ChatTemplate::ChatML, {{"user", "Hi"}}, {.generation_prompt = true});
  EXPECT_EQ(p.ids, ids_of(tok, {"<|im_start|>", "user\nHi", "<|im_end|>", "\n", "<|im_start|>",
                                "assistant\n"}));
  EXPECT_TRUE(scored_runs(tok, p).empty());
  // qwen3 without reasoning is chatml, but for the reply's block; think off ends the prompt with
  // an empty one.
  EXPECT_EQ(
      encode_chat(tok, ChatTemplate::Qwen3, {{"user", "Hi"}}, {.generation_prompt = true}).ids,
      p.ids);
  EXPECT_EQ(encode_chat(tok, ChatTemplate::Qwen3, {{"user", "Hi"}},
                        {.generation_prompt = true, .think = false})
                .ids,
            ids_of(tok, {"<|im_start|>", "user\nHi", "<|im_end|>", "\n", "<|im_start|>",
                         "assistant\n", "<think>", "\n\n", "</think>", "\n\n"}));
}

// The header and the reply are one string to the tokenizer: a reply starting with a line break
// joins the header's into one token ("\n\n", id 261), which is scored (it holds the reply's byte).
TEST(ChatTemplate, a_token_across_the_header_and_the_reply_is_scored) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const ChatIds c =
      encode_chat(tok, ChatTemplate::ChatML, {{"user", "q"}, {"assistant", "\nHello"}});
  const Ids want = ids_of(tok, {"<|im_start|>", "user\nq", "<|im_end|>", "\n", "<|im_start|>",
                                "assistant\n\nHello", "<|im_end|>", "\n"});
  EXPECT_EQ(c.ids, want);
  EXPECT_NE(std::find(c.ids.begin(), c.ids.end(), 261u), c.ids.end());
  EXPECT_EQ(scored_runs(tok, c), (std::vector<std::string>{"\n\nHello<|im_end|>"}));
  // A reply after a header without a shared token: the header's "\n" stays unscored.
  const ChatIds d = encode_chat(tok, ChatTemplate::ChatML, {{"user", "q"}, {"assistant", "Hi"}});
  EXPECT_EQ(scored_runs(tok, d), (std::vector<std::string>{"Hi<|im_end|>"}));
}

TEST(ChatTemplate, qwen3_writes_the_reasoning_block_where_its_template_does) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  auto qwen3 = [&](const Chat& chat) { return encode_chat(tok, ChatTemplate::Qwen3, chat); };
  // The last reply after the last query: an empty block, the markers their ids.
  const ChatIds one = qwen3({{"user", "Hi"}, {"assistant", "Hello!"}});
  EXPECT_EQ(one.ids, ids_of(tok, {"<|im_start|>", "user\nHi", "<|im_end|>", "\n", "<|im_start|>",
                                  "assistant\n", "<think>", "\n\n", "</think>", "\n\nHello!",
                                  "<|im_end|>", "\n"}));
  EXPECT_EQ(scored_runs(tok, one),
            (std::vector<std::string>{"<think>\n\n</think>\n\nHello!<|im_end|>"}));
  // An earlier reply loses its reasoning; the last keeps its own.
  EXPECT_EQ(text_of(tok, qwen3({{"user", "q1"},
                                {"assistant", "<think>r1</think>a1"},
                                {"user", "q2"},
                                {"assistant", "<think>\nr2\n</think>\n\na2"}})),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n");
  // The block's reply loses its leading line breaks, reasoning or not.
  EXPECT_EQ(
      text_of(tok, qwen3({{"user", "q"}, {"assistant", "\n\ny"}})),
      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\ny<|im_end|>\n");
  // Two replies after the query: the first has a block only if it reasons, the last always.
  EXPECT_EQ(text_of(tok, qwen3({{"user", "q"}, {"assistant", "x"}, {"assistant", "y"}})),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nx<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\ny<|im_end|>\n");
  EXPECT_EQ(
      text_of(tok,
              qwen3({{"user", "q"}, {"assistant", "<think>r</think>\n\nx"}, {"assistant", "y"}})),
      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nx<|im_end|>\n"
      "<|im_start|>assistant\n<think>\n\n</think>\n\ny<|im_end|>\n");
  // A user message that is a tool's response is no query: the reply before it is after the last
  // query but neither last nor reasoning, so it is written plain.
  EXPECT_EQ(text_of(tok, qwen3({{"user", "q"},
                                {"assistant", "<think>r</think>x"},
                                {"user", "<tool_response>42</tool_response>"},
                                {"assistant", "y"}})),
            "<|im_start|>user\nq<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr\n</think>\n\nx<|im_end|>\n"
            "<|im_start|>user\n<tool_response>42</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\ny<|im_end|>\n");
  // No user message: no query, so no reply is after it (the template's last_query_index is the
  // last message).
  EXPECT_EQ(text_of(tok, qwen3({{"system", "s"}, {"assistant", "<think>r</think>x"}})),
            "<|im_start|>system\ns<|im_end|>\n<|im_start|>assistant\nx<|im_end|>\n");
  // A reply before the last query keeps no reasoning even when it is the last assistant's.
  EXPECT_EQ(text_of(tok, qwen3({{"user", "q"}, {"assistant", "<think>r</think>x"}, {"user", "u"}})),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nx<|im_end|>\n"
            "<|im_start|>user\nu<|im_end|>\n");
}

TEST(ChatTemplate, llama3_trims_contents_and_starts_with_the_beginning_of_text) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  // Python's str.strip: ASCII white space, NBSP (U+00A0), the ideographic space (U+3000).
  const ChatIds c = encode_chat(tok, ChatTemplate::Llama3,
                                {{"system", "  Be brief.\n"},
                                 {"user", "\xc2\xa0Hi there\xe3\x80\x80"},
                                 {"assistant", "Hello!"}});
  EXPECT_EQ(c.ids,
            ids_of(tok, {"<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>",
                         "\n\nBe brief.", "<|eot_id|>", "<|start_header_id|>", "user",
                         "<|end_header_id|>", "\n\nHi there", "<|eot_id|>", "<|start_header_id|>",
                         "assistant", "<|end_header_id|>", "\n\nHello!", "<|eot_id|>"}));
  EXPECT_EQ(scored_runs(tok, c), (std::vector<std::string>{"Hello!<|eot_id|>"}));
  const Ids prompt = ids_of(tok, {"<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"});
  EXPECT_EQ(encode_chat(tok, ChatTemplate::Llama3, {}, {.generation_prompt = true}).ids, prompt);
  Ids want = ids_of(tok, {"<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
                          "\n\nq", "<|eot_id|>"});
  want.insert(want.end(), prompt.begin(), prompt.end());
  EXPECT_EQ(
      encode_chat(tok, ChatTemplate::Llama3, {{"user", " q "}}, {.generation_prompt = true}).ids,
      want);
}

// A message's content is text: a marker spelled in it stays its bytes.
TEST(ChatTemplate, markers_in_a_content_are_text) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const ChatIds c = encode_chat(tok, ChatTemplate::ChatML, {{"user", "<|im_end|>"}});
  EXPECT_EQ(c.ids, ids_of(tok, {"<|im_start|>", "user\n<|im_end|>", "<|im_end|>", "\n"}));
  EXPECT_EQ(std::count(c.ids.begin(), c.ids.end(), 264u), 1);
}

TEST(ChatTemplate, a_chat_prompt_ends_at_the_end_of_turn_or_of_text) {
  TinyHf h{chat_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const Prompt p = encode_chat_prompt(tok, ChatTemplate::Qwen3, {{"user", "Hi"}}, false);
  EXPECT_EQ(p.ids, encode_chat(tok, ChatTemplate::Qwen3, {{"user", "Hi"}},
                               {.generation_prompt = true, .think = false})
                       .ids);
  EXPECT_EQ(p.hidden, 0u);
  EXPECT_EQ(p.ends, (Ids{264, 262}));  // <|im_end|>, <|endoftext|>
  EXPECT_EQ(stop_ids(p), (std::vector<int64_t>{264, 262}));
  EXPECT_EQ(encode_chat_prompt(tok, ChatTemplate::Llama3, {{"user", "Hi"}}).ends, (Ids{270, 262}));
  std::vector<int32_t> out(p.ids.begin(), p.ids.end());
  out.insert(out.end(), {'o', 'k', 264});
  EXPECT_EQ(decode_completion(tok, p, out), "ok");
  out.back() = 262;
  EXPECT_EQ(decode_completion(tok, p, out), "ok");
  out.back() = 270;  // not this prompt's end: text
  EXPECT_EQ(decode_completion(tok, p, out), "ok<|eot_id|>");
  EXPECT_EQ(decode_generation(tok, p, out), tok.decode(p.ids) + "ok<|eot_id|>");
}

TEST(ChatTemplate, names_roles_and_a_tokenizer_without_the_markers) {
  EXPECT_EQ(chat_template_named("chatml"), ChatTemplate::ChatML);
  EXPECT_EQ(chat_template_named("qwen3"), ChatTemplate::Qwen3);
  EXPECT_EQ(chat_template_named("llama3"), ChatTemplate::Llama3);
  EXPECT_FALSE(chat_template_named("ChatML").has_value());
  for (ChatTemplate t : {ChatTemplate::ChatML, ChatTemplate::Qwen3, ChatTemplate::Llama3})
    EXPECT_EQ(chat_template_named(chat_template_name(t)), t);
  const auto bytes = make_tokenizer("byte");
  EXPECT_NE(error_of([&] {
              encode_chat(*bytes, ChatTemplate::ChatML, {{"user", "x"}});
            }).find("chat template chatml: the byte tokenizer has no token <|im_start|>"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              end_of_turn(*bytes, ChatTemplate::Llama3);
            }).find("the byte tokenizer has no token <|eot_id|>"),
            std::string::npos);
  EXPECT_EQ(bytes->added_token("<|endoftext|>"), bytes->eot_id());
  TinyHf h{chat_tokenizer()};
  EXPECT_NE(
      error_of([&] {
        encode_chat(*h.tok, ChatTemplate::Qwen3, {{"user", "x"}, {"tool", "y"}});
      }).find("chat template qwen3: message 2 has the role 'tool' (system, user or assistant)"),
      std::string::npos);
}

// ---- examples under a template (data/sft.h) ----------------------------------------------------

// Mistral's and Llama 2's layouts, as their templates render a conversation (the texts
// transformers' apply_chat_template gives for these messages, with Llama 2's system message first).
TEST(ChatTemplate, mistral_and_llama2_write_inst_turns_between_bos_and_eos) {
  TinyHf h{tessera::testing::instruct_tokenizer()};
  const Tokenizer& tok = *h.tok;
  const Chat turns = {{"user", "Hello"},
                      {"assistant", "Hi there"},
                      {"user", "Who are you"},
                      {"assistant", "   I am an assistant   "},
                      {"user", "Another question"}};
  const ChatIds m = encode_chat(tok, ChatTemplate::Mistral, turns);
  EXPECT_EQ(text_of(tok, m),
            "<s>[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   "
            "</s>[INST] Another question [/INST]");
  EXPECT_EQ(m.ids, ids_of(tok, {"<s>", "[INST] Hello [/INST]Hi there", "</s>",
                                "[INST] Who are you [/INST]   I am an assistant   ", "</s>",
                                "[INST] Another question [/INST]"}));
  EXPECT_EQ(scored_runs(tok, m),
            (std::vector<std::string>{"Hi there</s>", "   I am an assistant   </s>"}));
  Chat with_system = turns;
  with_system.insert(with_system.begin(), {"system", "You are a helpful assistant"});
  const ChatIds l = encode_chat(tok, ChatTemplate::Llama2, with_system);
  EXPECT_EQ(text_of(tok, l),
            "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there "
            "</s><s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] Another question "
            "[/INST]");
  // The reply from its first token through </s>: the space after [/INST] is the template's (a
  // token of its own here; in a token with the reply's first bytes it would be scored with them).
  EXPECT_EQ(scored_runs(tok, l),
            (std::vector<std::string>{"Hi there </s>", "I am an assistant </s>"}));
  // No generation prompt of their own: the model continues after [/INST]; a turn ends with </s>.
  for (ChatTemplate t : {ChatTemplate::Mistral, ChatTemplate::Llama2}) {
    const Prompt p = encode_chat_prompt(tok, t, {{"user", "Hi"}});
    EXPECT_EQ(tok.decode(p.ids), "<s>[INST] Hi [/INST]") << chat_template_name(t);
    EXPECT_EQ(p.ends, (std::vector<uint32_t>{272, tok.eot_id()})) << chat_template_name(t);
  }
}

TEST(ChatTemplate, mistral_and_llama2_refuse_what_their_templates_raise_on) {
  TinyHf h{tessera::testing::instruct_tokenizer()};
  const Tokenizer& tok = *h.tok;
  auto error = [&](ChatTemplate t, const Chat& c) {
    return error_of([&] { encode_chat(tok, t, c); });
  };
  EXPECT_CONTAINS(error(ChatTemplate::Mistral, {{"system", "Be brief."}, {"user", "Hi"}}),
                  "chat template mistral: message 1 is a system message, which Mistral's "
                  "instruct template has no place for");
  EXPECT_CONTAINS(error(ChatTemplate::Mistral, {{"user", "Hi"}, {"user", "Again"}}),
                  "message 2 is the user's where the assistant's comes");
  EXPECT_CONTAINS(error(ChatTemplate::Llama2, {{"assistant", "Hi"}}),
                  "chat template llama2: message 1 is the assistant's where the user's comes");
  EXPECT_CONTAINS(error(ChatTemplate::Llama2, {{"user", "Hi"}, {"system", "Be brief."}}),
                  "message 2 is a system message, which Llama 2's template takes only as the "
                  "first message");
  EXPECT_CONTAINS(error(ChatTemplate::Llama2, {{"system", "Be brief."}}),
                  "the system message needs a user message after it");
  // A tokenizer without <s>: the template's marker is named.
  TinyHf chat{tessera::testing::chat_tokenizer()};
  EXPECT_CONTAINS(error_of([&] {
                    encode_chat(*chat.tok, ChatTemplate::Mistral, {{"user", "Hi"}});
                  }),
                  "has no token <s>");
}

TEST(ChatExamples, every_form_is_a_conversation_and_messages_need_a_template) {
  const std::vector<SftExample> ex = parse_sft_examples(
      "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", "
      "\"content\": \"u\"}, {\"content\": \"a\", \"role\": \"assistant\"}]}\n"
      "{\"prompt\": \"p\", \"response\": \"r\"}\n"
      "{\"instruction\": \"Add.\", \"input\": \"2 3\", \"output\": \"5\"}\n"
      "{\"instruction\": \"Agree.\", \"output\": \"yes\"}\n"
      "{\"prompt\": \"only\"}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}\n",
      "ex.jsonl");
  ASSERT_EQ(ex.size(), 6u);
  EXPECT_EQ(conversation(ex[0]), (Chat{{"system", "s"}, {"user", "u"}, {"assistant", "a"}}));
  EXPECT_EQ(conversation(ex[1]), (Chat{{"user", "p"}, {"assistant", "r"}}));
  EXPECT_EQ(conversation(ex[2]), (Chat{{"user", "Add.\n\n2 3"}, {"assistant", "5"}}));
  EXPECT_EQ(conversation(ex[3]), (Chat{{"user", "Agree."}, {"assistant", "yes"}}));
  EXPECT_EQ(conversation(ex[4]), (Chat{{"user", "only"}}));
  EXPECT_EQ(ex[2].prompt, alpaca_prompt("Add.", "2 3"));  // without a template, as before
  for (size_t i = 0; i < ex.size(); ++i)
    EXPECT_EQ(ex[i].needs_chat_template(), i == 0 || i == 5) << i;
  const ChatTurn turn = last_turn(ex[0]);
  EXPECT_EQ(turn.context, (Chat{{"system", "s"}, {"user", "u"}}));
  EXPECT_EQ(turn.reply, "a");
  EXPECT_EQ(last_turn(ex[5]).context, conversation(ex[5]));
  EXPECT_EQ(last_turn(ex[5]).reply, "");

  TinyHf h{chat_tokenizer()};
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> mask;
  EXPECT_NE(error_of([&] {
              append_sft_example(*h.tok, ex[0], tokens, mask);
            }).find("an example given as messages needs a chat template"),
            std::string::npos);
  // Examples one after another, each's first id marked, the assistant's ids scored, nothing
  // between them.
  append_chat_example(*h.tok, ChatTemplate::Qwen3, ex[0], tokens, mask);
  const size_t second = tokens.size();
  append_chat_example(*h.tok, ChatTemplate::Qwen3, ex[1], tokens, mask);
  const ChatIds a = encode_chat(*h.tok, ChatTemplate::Qwen3, conversation(ex[0]));
  const ChatIds b = encode_chat(*h.tok, ChatTemplate::Qwen3, conversation(ex[1]));
  ASSERT_EQ(tokens.size(), a.ids.size() + b.ids.size());
  ASSERT_EQ(mask.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const ChatIds& c = i < second ? a : b;
    const size_t k = i < second ? i : i - second;
    EXPECT_EQ(tokens[i], c.ids[k]) << i;
    EXPECT_EQ(mask[i], (c.scored[k] ? kMaskScored : 0) | (k == 0 ? kMaskExampleStart : 0)) << i;
  }
}

TEST(ChatExamples, a_bad_message_is_named_by_line_and_index) {
  struct Case {
    const char* line;
    const char* want;
  };
  const Case cases[] = {
      {R"({"messages": "hi"})", "line 1: \"messages\" is a string, not an array"},
      {R"({"messages": []})", "line 1: \"messages\" is empty"},
      {R"({"messages": ["hi"]})", "line 1: messages[0] is a string, not a {\"role\", \"content\"}"},
      {R"({"messages": [{"role": "user"}]})", "line 1: messages[0]: no \"content\""},
      {R"({"messages": [{"content": "x"}]})", "line 1: messages[0]: no \"role\""},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]})",
       "line 1: messages[1]: role \"tool\" is not system, user or assistant"},
      {R"({"messages": [{"role": "user", "content": 3}]})",
       "line 1: messages[0]: \"content\" is a number, not a string"},
      {R"({"messages": [{"role": "user", "content": "x", "name": "n"}]})",
       "line 1: messages[0]: unknown key \"name\""},
      {R"({"messages": [{"role": "user", "content": "x"}], "prompt": "p"})",
       "line 1: prompt/response, Alpaca's instruction/input/output and messages are three forms"},
  };
  for (const Case& c : cases) {
    EXPECT_CONTAINS(error_of([&] { parse_sft_examples(c.line, "chat.jsonl"); }),
                    std::string("chat.jsonl ") + c.want)
        << c.line;
  }
}

// build/tokenize --format sft --chat-template: every example as append_chat_example writes it,
// examples whole in each split; flags that do not fit are refused before anything is written.
TEST(ChatExamples, tokenize_writes_each_example_in_the_template) {
  TinyHf h{chat_tokenizer()};
  std::string lines;
  std::vector<SftExample> examples;
  for (int i = 0; i < 6; ++i) {
    lines += "{\"messages\": [{\"role\": \"user\", \"content\": \"q" + std::to_string(i) +
             "\"}, {\"role\": \"assistant\", \"content\": \"a" + std::to_string(i) + "\"}]}\n";
    examples.push_back(
        {"", "", {{"user", "q" + std::to_string(i)}, {"assistant", "a" + std::to_string(i)}}});
  }
  const std::string in = h.dir.write("chat.jsonl", lines);
  const std::string tokenize = tessera::testing::bin_dir() +
                               "/tokenize --format sft --tokenizer hf --tokenizer-dir " +
                               h.dir.path.string() + " --input " + in;
  std::string log;
  const std::string out = h.dir.file("out");
  ASSERT_EQ(tessera::testing::run_command(
                tokenize + " --chat-template llama3 --val-fraction 0.3 --output " + out, &log),
            0)
      << log;
  std::vector<uint32_t> want;
  std::vector<uint8_t> want_mask;
  for (const SftExample& e : examples)
    append_chat_example(*h.tok, ChatTemplate::Llama3, e, want, want_mask);
  const Shard train(out + "/train_000.bin", 271), val(out + "/val_000.bin", 271);
  ASSERT_TRUE(train.has_loss_mask() && val.has_loss_mask());
  std::vector<uint32_t> got = train.read(0, train.size()), rest = val.read(0, val.size());
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, want);
  std::vector<uint8_t> mask(size_t(train.size() + val.size()));
  train.read_mask(0, train.size(), mask.data());
  val.read_mask(0, val.size(), mask.data() + train.size());
  for (uint8_t& m : want_mask) m &= kMaskScored;  // read_mask gives the scored bit alone
  EXPECT_EQ(mask, want_mask);
  const int64_t each = int64_t(want.size() / 6);  // six examples of one length
  EXPECT_EQ(train.example_starts(), (std::vector<int64_t>{0, each, 2 * each, 3 * each}));
  EXPECT_EQ(val.example_starts(), (std::vector<int64_t>{0, each}));  // 30% of 6: the last 2

  auto refused = [&](const std::string& flags, const std::string& want_text) {
    const std::string dir = h.dir.file("refused");
    EXPECT_EQ(tessera::testing::run_command(tokenize + " " + flags + " --output " + dir, &log), 1)
        << flags;
    EXPECT_CONTAINS(log, want_text) << flags;
    EXPECT_FALSE(std::filesystem::exists(dir)) << flags;
  };
  refused("", in + ": example 1 is a conversation (\"messages\"): give --chat-template");
  refused("--chat-template vicuna",
          "--chat-template must be chatml, qwen3, llama3, llama2 or mistral, got 'vicuna'");
  refused("--chat-template chatml --bos", "--bos and --chat-template");
  const std::string text = tessera::testing::bin_dir() + "/tokenize --tokenizer byte --input " + in;
  EXPECT_EQ(tessera::testing::run_command(
                text + " --chat-template chatml --output " + h.dir.file("o2"), &log),
            1);
  EXPECT_CONTAINS(log, "--chat-template goes with --format sft");
  EXPECT_EQ(tessera::testing::run_command(
                text + " --format sft --chat-template chatml --output " + h.dir.file("o3"), &log),
            1);
  EXPECT_CONTAINS(log, "chat template chatml: the byte tokenizer has no token <|im_start|>");
}
