// A hand-made Hugging Face tokenizer.json for the data tests: the 256 single bytes (ids 0..255),
// four merges' tokens (256..259) and added tokens, written to a temporary directory and loaded.
//
//   TinyHf h{dense()};            // every id 0..261 given
//   h.tok->encode("abc");         // {258}
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "checkpoint/json.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "test_util.h"

namespace tessera::testing {

// GPT-2's bytes_to_unicode, restated (see test_tokenizer.cpp): the spelling of byte b.
inline std::string spelled(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  uint32_t cp = uint32_t(b);
  if (!printable) {
    uint32_t n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
    cp = 0x100 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else {
    out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

struct TinyJson {
  std::string extra_vocab;  // ", \"x\": 300" ...
  std::string merges = R"("b c", "a b", "ab c", "Ġ 1")";
  std::string added = R"([{"id": 261, "content": "<|end_of_text|>", "special": true}])";
  std::string pre = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";
  std::string normalizer = "null";
  bool ignore_merges = false;

  std::string text() const {
    std::string vocab = "{";
    for (int b = 0; b < 256; ++b)
      vocab.append("\"")
          .append(json_escape(spelled(b)))
          .append("\": ")
          .append(std::to_string(b))
          .append(", ");
    vocab += R"("bc": 256, "ab": 257, "abc": 258, "Ġ1": 259)" + extra_vocab + "}";
    return R"({"version": "1.0", "added_tokens": )" + added + R"(, "normalizer": )" + normalizer +
           R"(, "pre_tokenizer": )" + pre +
           R"(, "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE",)"
           R"( "dropout": null, "unk_token": null, "continuing_subword_prefix": "",)"
           R"( "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,)"
           R"( "ignore_merges": )" +
           (ignore_merges ? "true" : "false") + R"(, "vocab": )" + vocab + R"(, "merges": [)" +
           merges + "]}}";
  }
};

struct TinyHf {
  TempDir dir;
  std::unique_ptr<data::Tokenizer> tok;
  explicit TinyHf(const TinyJson& j, const std::string& config = "") {
    dir.write("tokenizer.json", j.text());
    if (!config.empty()) dir.write("tokenizer_config.json", config);
    tok = data::make_tokenizer("hf", dir.path.string());
  }
};

// The tiny file with ids 0..261 all given (TinyJson alone leaves 260 out).
inline TinyJson dense() {
  TinyJson j;
  j.extra_vocab = R"(, "zz": 260)";
  j.merges += R"(, "z z")";
  return j;
}

// A pre_tokenizer of a Split on one of pretokenize.h's patterns, then a ByteLevel (Llama 3's and
// Qwen2's layout).
inline std::string split_then_byte_level(data::Pretokenizer kind) {
  return R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": ")" +
         json_escape(std::string(pretokenizer_pattern(kind))) +
         R"("}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel",)"
         R"( "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})";
}

// dense() with the chat templates' markers (data/chat.h) as added tokens and a token for "\n\n"
// (261; Llama 3's split makes a line-break run one piece): <|endoftext|> 262, <|im_start|> 263,
// <|im_end|> 264, <think> 265, </think> 266, <|begin_of_text|> 267, <|start_header_id|> 268,
// <|end_header_id|> 269, <|eot_id|> 270; 271 ids.
inline TinyJson chat_tokenizer() {
  TinyJson j = dense();
  j.extra_vocab += R"(, "ĊĊ": 261)";
  j.merges += R"(, "Ċ Ċ")";
  j.pre = split_then_byte_level(data::Pretokenizer::Llama3);
  const char* markers[] = {
      "<|endoftext|>",     "<|im_start|>",        "<|im_end|>",        "<think>",   "</think>",
      "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
  std::string added;
  for (int i = 0; i < 9; ++i)
    added += std::string(i ? ", " : "[") + R"({"id": )" + std::to_string(262 + i) +
             R"(, "content": ")" + markers[i] + R"(", "special": true})";
  j.added = added + "]";
  return j;
}

// chat_tokenizer() with Llama 2's and Mistral's beginning and end of text as added tokens: <s> 271,
// </s> 272; 273 ids.
inline TinyJson instruct_tokenizer() {
  TinyJson j = chat_tokenizer();
  j.added = j.added.substr(0, j.added.size() - 1) +
            R"(, {"id": 271, "content": "<s>", "special": true})" +
            R"(, {"id": 272, "content": "</s>", "special": true}])";
  return j;
}

}  // namespace tessera::testing
