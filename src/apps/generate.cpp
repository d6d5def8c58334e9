// build/generate --checkpoint checkpoints/tiny [--prompt "In the beginning"] [--max-new-tokens 200]
//                [--temperature 0.8] [--top-k 40] [--seed 42] [--base BASE] [--prompt-style alpaca]
//                [--bos] [--num-samples N] [--system TEXT] [--no-think] [--chat]
// Loads the model described by the config stored in the checkpoint (a LoRA checkpoint brings its
// base: the one it recorded, or --base), then samples with a KV cache, printing the prompt and
// then each token as it is drawn. --prompt-style alpaca sets the prompt as the instruction of
// Alpaca's template (data/sft.h), as `tokenize --format sft` sets Alpaca examples, for a model
// fine-tuned on them. --prompt-style chatml, qwen3, llama3, llama2 or mistral sends the prompt as
// a user's message in that chat template (data/chat.h; after --system's message where given), as
// `tokenize --chat-template` writes examples and as instruct models were tuned; the printed prompt
// shows its markers, and the reply ends at the template's end of turn (or the end-of-text id).
// --no-think (qwen3) ends the prompt with Qwen3's empty reasoning block, as its
// enable_thinking=False does.
// The checkpoint's data.chat_template is the default style. --chat holds a conversation in the
// template: each line of standard input is a user's message, and the reply to it is drawn from
// the whole conversation so far (re-encoded each turn, as the template writes earlier replies:
// Qwen3's lose their reasoning) and printed as it is drawn, a line a reply (on standard error,
// the conversation's tokens and those drawn). --bos puts the tokenizer's beginning-of-text id
// first (Llama 3's <|begin_of_text|>), as `tokenize --bos` starts every document and example.
// --num-samples N draws N continuations of the prompt together, one batch through the cache; the
// i-th (from 0) draws with seed + i, as `--seed <seed + i>` alone would, and each is printed once
// all are drawn, under a line naming it.
//
// build/generate --checkpoint CK --prompts examples.jsonl [--batch-size 16] [--temperature 0]
// continues every example's prompt of a file (data/sft.h: JSON Lines or a JSON array of prompt /
// response or Alpaca examples; a response is not fed, only printed back), the i-th (from 0) with
// seed + i as --prompt and --seed <seed + i> alone would, the model loaded once. Under a chat
// template (--prompt-style, or the checkpoint's data.chat_template) an example is its conversation
// less a final assistant message (the response printed back), conversations ("messages") too. Up to
// --batch-size prompts of any lengths are drawn together (nn::generate_each). Prints a JSON
// object a line in the file's order, each as soon as it and those before it are drawn:
//   {"prompt": <the prompt as fed, a chat's markers as their text>, "completion": <what follows
//    it, less the end-of-text or end of turn>, "response": <the example's, when it has one>}
// (text the model drew that is not UTF-8 comes out with U+FFFD for each bad byte).
#include "nn/generate.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "config/cli.h"
#include "data/chat.h"
#include "data/sft.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "train/load.h"
#include "train/report.h"  // json_string

namespace {

using namespace tessera;

// A default's text for --help as it would be typed: 0.8, not 0.800000.
std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// --prompts: every example's prompt (encoded as given) continued (the file's header comment),
// printed in order.
// shown[i], responses[i]: the i-th prompt's text and the example's response ("" for none).
void generate_file(const nn::GPT& model, const data::Tokenizer& tok,
                   const std::vector<std::string>& shown, const std::vector<std::string>& responses,
                   const std::vector<data::Prompt>& given, const nn::SampleOptions& opt,
                   uint64_t seed, int64_t batch) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Generator> gens;
  for (size_t i = 0; i < given.size(); ++i) {
    prompts.emplace_back(given[i].ids.begin(), given[i].ids.end());
    gens.emplace_back(seed + uint64_t(i));
  }
  auto json = [](const std::string& s) {
    return train::json_string(data::replace_invalid_utf8(s));
  };
  std::vector<std::optional<std::string>> lines(given.size());
  size_t printed = 0;
  nn::generate_each(
      model, prompts, opt, gens, batch, [&](size_t i, const std::vector<int32_t>& ids) {
        std::string line = "{\"prompt\": " + json(shown[i]) +
                           ", \"completion\": " + json(data::decode_completion(tok, given[i], ids));
        if (!responses[i].empty()) line += ", \"response\": " + json(responses[i]);
        lines[i] = line + "}";
        for (; printed < lines.size() && lines[printed]; ++printed)
          std::cout << *lines[printed] << '\n';
        std::cout << std::flush;
      });
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  return run_main("generate", [&] {
    cxxopts::Options options("generate", "Sample text from a trained checkpoint");
    options.add_options()(
        "prompt", "text to continue (default: a newline; \"\": from the end-of-text id)",
        cxxopts::value<std::string>())("max-new-tokens", "tokens to sample (0 to 1048576)",
                                       cxxopts::value<int64_t>()->default_value("200"))(
        "temperature", ">= 0; 0 = greedy",
        cxxopts::value<double>()->default_value(number_text(nn::kDefaultTemperature)))(
        "top-k", "sample among the k most likely (0 = all)",
        cxxopts::value<int64_t>()->default_value(std::to_string(nn::kDefaultTopK)))(
        "top-p",
        "then among the most likely holding this share of the probability (nucleus sampling; 1 = "
        "all)",
        cxxopts::value<double>()->default_value("1"))(
        "seed", "sampling seed", cxxopts::value<uint64_t>()->default_value("42"))(
        "num-samples",
        "continuations to draw, together as one batch (1 to 1024); the i-th (from 0) with seed + i",
        cxxopts::value<int64_t>()->default_value("1"))(
        "prompts",
        "a file of prompts to continue, each alone: JSON Lines (or a JSON array) of examples as "
        "tokenize --format sft reads them; prints a JSON object a line, {prompt, completion[, "
        "response]}, in the file's order; the i-th (from 0) with seed + i",
        cxxopts::value<std::string>())(
        "batch-size", "with --prompts: prompts drawn together, at most this many (1 to 1024)",
        cxxopts::value<int64_t>()->default_value("16"))(
        "tokenizer-dir", "override the gpt2 tokenizer's directory", cxxopts::value<std::string>())(
        "prompt-style",
        "plain (the prompt as it is) | alpaca (the prompt as the instruction of Alpaca's template, "
        "as tokenize --format sft sets Alpaca examples) | chatml | qwen3 | llama3 | llama2 | "
        "mistral (the prompt as a "
        "user's message in that chat template, as tokenize --chat-template writes examples); "
        "default: the checkpoint's data.chat_template, else plain",
        cxxopts::value<std::string>()->default_value("plain"))(
        "system",
        "under a chat template: a system message before the prompt (with --prompts, before each "
        "example that has none)",
        cxxopts::value<std::string>())(
        "no-think",
        "under qwen3: end the prompt with an empty reasoning block (Qwen3's "
        "enable_thinking=False)")(
        "chat",
        "a conversation under a chat template: each line of standard input a user's message, "
        "each reply printed as it is drawn, from the whole conversation so far")(
        "bos",
        "start with the tokenizer's beginning-of-text id, as tokenize --bos starts documents")(
        "h,help", "show this help");
    train::add_model_options(options);
    train::add_device_option(options);
    cxxopts::ParseResult args;
    if (!parse_flags_or_help(options, argc, argv, args)) return 0;
    nn::SampleOptions opt{.max_new_tokens = args["max-new-tokens"].as<int64_t>(),
                          .temperature = args["temperature"].as<double>(),
                          .top_k = args["top-k"].as<int64_t>(),
                          .top_p = args["top-p"].as<double>()};
    nn::check_sample_options(opt);  // before the model loads
    const int64_t samples = args["num-samples"].as<int64_t>();
    TESSERA_CHECK(samples >= 1 && samples <= 1024,
                  "command line: --num-samples must be in [1, 1024], got ", samples);
    const std::string style_flag = args["prompt-style"].as<std::string>();
    TESSERA_CHECK(
        style_flag == "plain" || style_flag == "alpaca" || data::chat_template_named(style_flag),
        "command line: --prompt-style must be plain, alpaca, ", data::kChatTemplateNames, ", got '",
        style_flag, "'");
    const int64_t batch = args["batch-size"].as<int64_t>();
    TESSERA_CHECK(batch >= 1 && batch <= 1024,
                  "command line: --batch-size must be in [1, 1024], got ", batch);
    // --prompts: the file read and checked before the model loads.
    std::vector<data::SftExample> examples;
    if (args.count("prompts")) {
      TESSERA_CHECK(!args.count("prompt") && style_flag != "alpaca" && samples == 1,
                    "command line: --prompts takes its prompts from the file (an Alpaca example "
                    "sets its own in the template), one continuation each: not with --prompt, "
                    "--prompt-style alpaca or --num-samples");
      examples = data::read_sft_examples(args["prompts"].as<std::string>());
    } else {
      TESSERA_CHECK(!args.count("batch-size"), "command line: --batch-size goes with --prompts");
    }
    TESSERA_CHECK(style_flag != "alpaca" || args.count("prompt"),
                  "command line: --prompt-style alpaca needs --prompt, the instruction");
    TESSERA_CHECK(!args.count("chat") || (!args.count("prompt") && !args.count("prompts") &&
                                          samples == 1 && style_flag != "alpaca"),
                  "command line: --chat reads its messages from standard input, one reply each: "
                  "not with --prompt, --prompts, --num-samples or --prompt-style alpaca");
    train::LoadedModel m = train::load_model(args);
    train::place_loaded(m, args);
    const Config& cfg = m.config;

    // The style: the flag's, else the template the checkpoint was tuned in.
    const bool from_checkpoint = !args.count("prompt-style") && !cfg.data.chat_template.empty();
    const std::string style = from_checkpoint ? cfg.data.chat_template : style_flag;
    const std::optional<data::ChatTemplate> chat = data::chat_template_named(style);
    const std::string named = from_checkpoint
                                  ? "the chat template " + style + " (" + m.path +
                                        "'s data.chat_template; --prompt-style plain for none)"
                                  : "--prompt-style " + style;
    TESSERA_CHECK(chat || (!args.count("system") && !args.count("no-think")),
                  "command line: --system and --no-think go with a chat template (--prompt-style ",
                  data::kChatTemplateNames, ")");
    TESSERA_CHECK(!args.count("no-think") || chat == data::ChatTemplate::Qwen3,
                  "command line: --no-think goes with the qwen3 template, not ", named);
    TESSERA_CHECK(!chat || !args.count("bos"), "command line: --bos and ", named,
                  ": the template writes what starts a prompt");
    TESSERA_CHECK(!chat || args.count("prompt") || args.count("prompts") || args.count("chat"),
                  "command line: ", named, " needs --prompt, the user's message");
    TESSERA_CHECK(chat || !args.count("chat"),
                  "command line: --chat needs a chat template (--prompt-style ",
                  data::kChatTemplateNames, ", or the checkpoint's data.chat_template)");

    TESSERA_CHECK(!args.count("tokenizer-dir") || cfg.data.tokenizer != "byte",
                  "command line: --tokenizer-dir applies to the gpt2 and hf tokenizers only (",
                  m.path, " uses data.tokenizer byte)");
    const std::string dir = args.count("tokenizer-dir") ? args["tokenizer-dir"].as<std::string>()
                                                        : cfg.data.tokenizer_dir;
    auto tok = data::make_tokenizer(cfg.data.tokenizer, dir);
    const uint64_t seed = args["seed"].as<uint64_t>();
    opt.vocab = tok->vocab_size();  // a model padded past it: its extra ids decode to nothing
    // --bos: the beginning-of-text id first, as tokenize --bos starts documents; an empty prompt
    // starts from the end-of-text id (it separates documents in training). Neither is printed.
    auto encode = [&](const std::string& text) {
      return data::encode_prompt(*tok, text, args.count("bos") > 0, "command line: --bos");
    };
    // Under a chat template: the messages and the assistant's header, --system's message first.
    auto encode_chat = [&](std::vector<data::ChatMessage> context) {
      if (args.count("system") && (context.empty() || context[0].role != "system"))
        context.insert(context.begin(), {"system", args["system"].as<std::string>()});
      return data::encode_chat_prompt(*tok, *chat, context, !args.count("no-think"));
    };
    const RopeScalingConfig& rs = cfg.model.rope_scaling;
    const int64_t L0 = rs.original_max_position > 0 ? rs.original_max_position : cfg.model.block_size;
    auto note_dynamic_ntk = [&](size_t prompt_tokens) {  // once, for the longest prompt
      if (rs.type == "dynamic" && int64_t(prompt_tokens) + opt.max_new_tokens > L0)
        std::cerr << "note: dynamic NTK scaling past " << L0
                  << " tokens: each cached key keeps "
                     "the table of the length it was written at (as Hugging Face's cache), eval "
                     "rotates a window with one table\n";
    };
    if (args.count("prompts")) {
      std::vector<data::Prompt> given;
      std::vector<std::string> shown, responses;
      size_t longest = 0;
      for (size_t i = 0; i < examples.size(); ++i) {
        const data::SftExample& e = examples[i];
        if (chat) {
          data::ChatTurn turn = data::last_turn(e);
          given.push_back(encode_chat(std::move(turn.context)));
          shown.push_back(tok->decode(given.back().ids));
          responses.push_back(std::move(turn.reply));
        } else {
          TESSERA_CHECK(!e.needs_chat_template(), args["prompts"].as<std::string>(), ": example ",
                        i + 1, " is a conversation (\"messages\"): give --prompt-style ",
                        data::kChatTemplateNames);
          given.push_back(encode(e.prompt));
          shown.push_back(e.prompt);
          responses.push_back(e.response);
        }
        longest = std::max(longest, given.back().ids.size());
      }
      note_dynamic_ntk(longest);
      opt.stop_tokens = data::stop_ids(given[0]);  // every prompt's: one template
      generate_file(*m.model, *tok, shown, responses, given, opt, seed, batch);
      return 0;
    }
    // One continuation of p with gens[0], each id's text printed as it is drawn (not the id that
    // ends it); returns the ids, the prompt's first.
    auto stream = [&](const data::Prompt& p, std::vector<Generator>& gens) {
      opt.stop_tokens = data::stop_ids(p);
      const std::vector<int32_t> ids(p.ids.begin(), p.ids.end());
      return nn::generate_many(*m.model, ids, opt, gens, [&](size_t, int32_t id) {
        if (std::find(p.ends.begin(), p.ends.end(), uint32_t(id)) == p.ends.end())
          std::cout << tok->decode_more({uint32_t(id)}) << std::flush;
      })[0];
    };
    if (args.count("chat")) {  // a user's message a line, each reply drawn from the whole chat
      std::vector<Generator> gens{Generator(seed)};
      std::vector<data::ChatMessage> conversation;
      const bool typed = ::isatty(STDIN_FILENO);  // a person at a terminal: prompt for a line
      for (std::string line;;) {
        if (typed) std::cerr << "> " << std::flush;
        if (!std::getline(std::cin, line)) break;
        if (line.empty()) continue;
        conversation.push_back({"user", line});
        const data::Prompt p = encode_chat(conversation);
        const std::vector<int32_t> ids = stream(p, gens);
        std::cout << std::endl;
        conversation.push_back({"assistant", data::decode_completion(*tok, p, ids)});
        std::cerr << "(" << p.ids.size() << " tokens of conversation, " << ids.size() - p.ids.size()
                  << " drawn)\n";
      }
      return 0;
    }
    std::string text = args.count("prompt") ? args["prompt"].as<std::string>() : std::string("\n");
    if (style == "alpaca") text = data::alpaca_prompt(text, "");
    const data::Prompt given_ids = chat ? encode_chat({{"user", text}}) : encode(text);
    const std::vector<int32_t> prompt(given_ids.ids.begin(), given_ids.ids.end());
    opt.stop_tokens = data::stop_ids(given_ids);
    note_dynamic_ntk(prompt.size());
    std::vector<Generator> gens;
    for (int64_t i = 0; i < samples; ++i) gens.emplace_back(seed + uint64_t(i));
    if (samples == 1) {  // printed as it is drawn: the prompt, then each token's text
      const std::vector<uint32_t> shown(given_ids.ids.begin() + int64_t(given_ids.hidden),
                                        given_ids.ids.end());
      std::cout << tok->decode(shown) << std::flush;
      stream(given_ids, gens);
      std::cout << std::endl;
      return 0;
    }
    const std::vector<std::vector<int32_t>> out = nn::generate_many(*m.model, prompt, opt, gens);
    for (size_t i = 0; i < out.size(); ++i)
      std::cout << "--- sample " << i + 1 << " of " << samples << " (--seed " << seed + i
                << ") ---\n"
                << data::decode_generation(*tok, given_ids, out[i]) << std::endl;
    return 0;
  });
}
