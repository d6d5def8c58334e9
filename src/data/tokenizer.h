// Tokenizers: text <-> token ids.
//
//   auto tok = make_tokenizer("gpt2", "data/tokenizers/gpt2");   // or make_tokenizer("byte")
//   std::vector<uint32_t> ids = tok->encode("Hello world");      // {15496, 995}
//   std::string text = tok->decode(ids);                         // "Hello world"
//   write_shard(path, ids, tok->vocab_size());
//
// Every tokenizer here is byte-level: every byte string encodes, and decode(encode(s)) == s for
// every s (valid UTF-8 or not), except that an hf tokenizer.json with the NFC normalizer (Qwen's)
// gives back s in NFC (unicode_nfc.h). None parses special tokens ("<|endoftext|>") out of text:
// the end-of-text id is placed by the caller (the tokenize binary puts one between documents; a
// chat template, data/chat.h, places its markers by added_token); decode writes it as its text
// ("<|endoftext|>", Llama 3's "<|end_of_text|>").
//
//   byte: ids 0..255 are the bytes themselves, 256 is end-of-text; vocabulary 257.
//   gpt2: GPT-2's byte-level BPE (Radford et al. 2019) from its encoder.json (token -> id) and
//         vocab.bpe (merges in rank order); 50257 ids, end-of-text 50256.
//   hf:   a Hugging Face tokenizer.json of a byte-level BPE (hf_tokenizer.cpp says which): GPT-2's
//         own, Llama 3's and those built like them; its added tokens decode as their text. Its
//         beginning-of-text id, where it has one, is placed by the caller too (bos_id).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<uint32_t> encode(std::string_view text) const = 0;
  // The ids of text that continues other text: encode's, but for a SentencePiece tokenizer, whose
  // encode starts a text with a space ("▁"), without it (a continuation encoded apart, as an SFT
  // response or a multiple-choice ending is).
  virtual std::vector<uint32_t> encode_more(std::string_view text) const { return encode(text); }
  // The ids of text that follows an added token in a longer text (a chat template's turn marker):
  // Hugging Face's tokenizers normalise and pre-tokenise each piece between added tokens apart,
  // so a SentencePiece tokenizer whose "▁" goes before every piece (the legacy Prepend normaliser,
  // Metaspace's prepend_scheme always) encodes it as a text of its own, one whose "▁" goes only
  // at the text's start (prepend_scheme first) as a continuation.
  virtual std::vector<uint32_t> encode_piece(std::string_view text) const { return encode(text); }
  // The bytes of the tokens, concatenated; a multi-byte character split across a sequence's end
  // comes back as its partial bytes. An id >= vocab_size() is an error naming it.
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  // The text ids add after others: decode's, but for a SentencePiece tokenizer, whose decode drops
  // the space its text starts with (its encode put one there), the space kept. Token by token,
  // decode(a) + decode_more(b) == decode(a + b).
  virtual std::string decode_more(const std::vector<uint32_t>& ids) const { return decode(ids); }
  virtual int64_t vocab_size() const = 0;  // largest id + 1
  virtual uint32_t eot_id() const = 0;     // end-of-text
  // The beginning-of-text id a model expects before a document (Llama 3's <|begin_of_text|>), for
  // tokenize --bos and generate --bos; none for byte and gpt2, whose models start without one.
  virtual std::optional<uint32_t> bos_id() const { return std::nullopt; }
  // The id of the special (added) token whose text this is ("<|im_start|>", "<|eot_id|>"), none
  // where the vocabulary has no such token: byte's and gpt2's only one is "<|endoftext|>". Text
  // that spells one is still encoded as its bytes by encode; this is how a caller places one.
  virtual std::optional<uint32_t> added_token(std::string_view text) const = 0;
  virtual std::string name() const = 0;    // "byte" | "gpt2" | "hf"
};

// name: "byte" (dir unused), "gpt2" (reads <dir>/encoder.json and <dir>/vocab.bpe; an empty dir
// means data/tokenizers/gpt2) or "hf" (reads <dir>/tokenizer.json, and <dir>/tokenizer_config.json
// where there is one). Errors name the tokenizer, or the file and line or key that is wrong.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir = "");

// The tokenizer's beginning-of-text id; an error naming the tokenizer and `what` (the flag that
// asked for it) where it has none.
uint32_t require_bos(const Tokenizer& tok, const std::string& what);

// A generation's prompt (build/generate, training samples): text's ids, after the
// beginning-of-text id when bos (require_bos names `what` where there is none), or the end-of-text
// id alone for an empty text, as unconditioned GPT-2 sampling starts; `hidden` counts those
// marker ids, which the printed text leaves out. `ends`: the ids that end a generation from it (the
// end-of-text id; a chat prompt's end of turn too, data/chat.h).
struct Prompt {
  std::vector<uint32_t> ids;
  size_t hidden = 0;
  std::vector<uint32_t> ends;
};
Prompt encode_prompt(const Tokenizer& tok, std::string_view text, bool bos,
                     const std::string& what);

// The prompt's ends as sampling's stop ids (nn::SampleOptions::stop_tokens).
std::vector<int64_t> stop_ids(const Prompt& prompt);

// The text of a generation from `prompt`: its ids past the prompt's hidden ones, less a final
// id of prompt.ends (it ends the generation).
std::string decode_generation(const Tokenizer& tok, const Prompt& prompt,
                              const std::vector<int32_t>& ids);
// Its ids past the whole prompt, less a final id of prompt.ends: what the model added.
std::string decode_completion(const Tokenizer& tok, const Prompt& prompt,
                              const std::vector<int32_t>& ids);

std::unique_ptr<Tokenizer> make_byte_tokenizer();
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& encoder_json_path,
                                               const std::string& vocab_bpe_path);
std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& dir);

}  // namespace tessera::data
