// build/tokenize: text files -> token shards for training (data/README.md).
//
//   build/tokenize --tokenizer gpt2 --input corpus.txt --output data/corpus
//     -> data/corpus/train_000.bin, data/corpus/val_000.bin
//
// Each input file is one document. Documents are joined with the tokenizer's end-of-text id between
// them, so a model sees where one text stops and the next begins. The validation split is the tail
// of the token stream: with several documents it starts at the document boundary nearest to
// (1 - val_fraction) of the tokens (no document is cut in two, so train and val share no text);
// with one document it is that document's last val_fraction of tokens. A split longer than
// --shard-tokens continues in _001, _002, ...
//
// --format sft: each input holds prompt / response examples (data/sft.h: JSON Lines or a JSON
// array; Alpaca's instruction / input / output too). The stream is the examples one after another,
// each ending with the end-of-text id, and each shard gets a loss mask beside it (train_000.mask:
// 1 for a response's tokens and its end of text, 0 for a prompt's, and each example's first token
// marked), so training scores the responses only. The validation split is the last examples,
// whole, nearest to val_fraction of the tokens; a shard holds whole examples (it ends at the last
// example that fits in --shard-tokens).
//
// --format pairs: each input holds preference pairs for DPO (data/preference.h: prompt, chosen,
// rejected, as strings or as lists of messages). A pair is written as its chosen example then its
// rejected one, each exactly as --format sft writes an example (--bos and --chat-template too),
// the chosen one's first token also marked as the pair's start (shard.h: kMaskPairStart, a
// version 3 mask). Pairs are kept whole as sft keeps examples: a shard ends before a pair, and the
// validation split is the last pairs, nearest to val_fraction of the tokens.
//
// --chat-template chatml|qwen3|llama3|llama2|mistral (with --format sft or pairs): each example is
// written as a conversation in an instruct model's template (data/chat.h; prompt / response and
// Alpaca examples as a user's message and the assistant's reply, data/sft.h), the assistant's
// turns and their end-of-turn markers scored, no end-of-text between examples. The tokenizer must
// have the template's markers (Qwen's tokenizer.json for chatml and qwen3, Llama 3's for llama3,
// Llama 2's or Mistral's for llama2 and mistral).
//
// --bos: every document (example) starts with the tokenizer's beginning-of-text id (an hf
// tokenizer's bos_token: Llama 3's <|begin_of_text|>), which models trained so expect first; in
// an example it is unscored, part of the prompt.
//
// An --output that already holds shards (train_*.bin, val_*.bin) or masks is refused: a loader
// globbing train_*.bin would read old and new ones together. So is an input that is empty or
// unreadable.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "config/cli.h"
#include "core/error.h"
#include "data/chat.h"
#include "data/preference.h"
#include "data/sft.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using namespace tessera;
using namespace tessera::data;

namespace {

// The rest of what fd gives, appended to *text. A read error or an input too large for memory is
// an error naming the input (std::bad_alloc alone would not say which).
void read_rest(int fd, const std::string& path, std::string* text) {
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      TESSERA_FAIL("cannot read input file ", path, ": ", std::strerror(err));
    }
    if (n == 0) break;
    try {
      text->append(buf, size_t(n));
    } catch (const std::bad_alloc&) {
      ::close(fd);
      TESSERA_FAIL("cannot read input file ", path, ": it does not fit in memory (", text->size(),
                   " bytes read)");
    }
  }
}

// Opens an input, failing with its name unless it is a file or pipe that can be read.
int open_input(const std::string& path, struct stat* st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot read input file ", path, ": ", std::strerror(errno));
  if (::fstat(fd, st) != 0) {
    const int err = errno;
    ::close(fd);
    TESSERA_FAIL("cannot read input file ", path, ": ", std::strerror(err));
  }
  if (S_ISDIR(st->st_mode)) {
    ::close(fd);
    TESSERA_FAIL("cannot read input file ", path, ": ", std::strerror(EISDIR));
  }
  return fd;
}

// The whole file. A directory, an unreadable file or an empty one is an error naming it: read as
// "" it would become an empty document, or an empty split that names no file.
std::string read_input(const std::string& path) {
  struct stat st {};
  const int fd = open_input(path, &st);
  std::string text;
  read_rest(fd, path, &text);
  ::close(fd);
  TESSERA_CHECK(!text.empty(), "input file ", path, " is empty");
  return text;
}

// Fails unless the input can be read and holds a byte: every input is checked before any work, so
// a bad last one of 500 files fails at once. A regular file is read no further (it is read whole
// when its turn comes). A pipe (`--input <(cmd)`, /dev/stdin) gives its bytes once only: it is read
// whole here and its text returned, for the tokenizer to use rather than open it again. A device
// is refused (/dev/zero would never end), unless it reads as empty (/dev/null: refused as empty).
std::optional<std::string> check_input(const std::string& path) {
  struct stat st {};
  const int fd = open_input(path, &st);
  std::string text;
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    read_rest(fd, path, &text);
  } else {
    char byte;
    ssize_t n;
    do n = ::read(fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    const int err = errno;
    if (n < 0) {
      ::close(fd);
      TESSERA_FAIL("cannot read input file ", path, ": ", std::strerror(err));
    }
    if (n == 1 && !S_ISREG(st.st_mode)) {
      ::close(fd);
      TESSERA_FAIL("cannot read input file ", path, ": it is a device, not a regular file or pipe");
    }
    if (n == 1) text.assign(1, byte);
  }
  ::close(fd);
  TESSERA_CHECK(!text.empty(), "input file ", path, " is empty");
  if (S_ISREG(st.st_mode)) return std::nullopt;
  return text;
}

// Shards already in dir ("" when none). New shards written beside them would mix two corpora
// under one train_*.bin / val_*.bin glob, and replacing them would lose the old ones.
std::string existing_shards(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if ((name.starts_with("train_") || name.starts_with("val_")) &&
        (name.ends_with(".bin") || name.ends_with(".mask")))
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  std::string list;
  for (size_t i = 0; i < names.size() && i < 3; ++i) list += (i ? ", " : "") + names[i];
  if (names.size() > 3) list += ", ... (" + std::to_string(names.size()) + " in all)";
  return list;
}

std::string shard_path(const std::string& prefix, const std::string& split, int index) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s_%03d.bin", split.c_str(), index);
  return (fs::path(prefix) / name).string();
}

// The end of the shard that starts at token `begin` of n: begin + shard_tokens, or, where the mask
// marks the starts of units (`start_bit`: examples, or pairs), the last start in
// (begin, begin + shard_tokens], so that no unit is cut in two (one longer than shard_tokens fills
// a shard alone).
size_t shard_end(const std::vector<uint8_t>& mask, uint8_t start_bit, size_t begin,
                 int64_t shard_tokens, size_t n) {
  const size_t limit = std::min(n, begin + size_t(shard_tokens));
  if (mask.empty() || limit == n) return limit;
  const auto starts = [&](size_t i) { return (mask[i] & start_bit) != 0; };
  for (size_t e = limit; e > begin; --e)
    if (starts(e)) return e;
  size_t e = limit + 1;
  while (e < n && !starts(e)) ++e;
  return e;
}

// Writes tokens as prefix/<split>_000.bin, _001.bin, ... into a directory that holds no shards,
// each with its part of mask beside it (loss_mask_path) when mask is not empty, cut before a
// start_bit of it (shard_end), appending each path to *written before its file appears. Returns
// this split's shard paths.
std::vector<std::string> write_split(const std::string& prefix, const std::string& split,
                                     const std::vector<uint32_t>& tokens,
                                     const std::vector<uint8_t>& mask, uint8_t start_bit,
                                     int64_t shard_tokens, int64_t vocab_size,
                                     std::vector<std::string>* written) {
  std::vector<std::string> paths;
  for (size_t begin = 0, end = 0; begin < tokens.size(); begin = end) {
    end = shard_end(mask, start_bit, begin, shard_tokens, tokens.size());
    paths.push_back(shard_path(prefix, split, int(paths.size())));
    if (!mask.empty()) {  // the mask first: a shard is never on disk without it
      written->push_back(loss_mask_path(paths.back()));
      write_loss_mask(written->back(),
                      std::vector<uint8_t>(mask.begin() + begin, mask.begin() + end));
    }
    written->push_back(paths.back());
    write_shard(paths.back(), std::vector<uint32_t>(tokens.begin() + begin, tokens.begin() + end),
                vocab_size);
  }
  return paths;
}

// The first document of the validation split: of docs [0, k) in train and [k, n) in val, the k
// whose start in the stream (each document's tokens plus `gap` between them) is nearest to
// (1 - val_fraction) of the tokens, k >= 1; n without a validation split.
size_t split_point(const std::vector<int64_t>& sizes, int64_t gap, double val_fraction) {
  if (val_fraction <= 0) return sizes.size();
  int64_t total = 0;
  for (size_t d = 0; d < sizes.size(); ++d) total += sizes[d] + (d > 0 ? gap : 0);
  const double target = double(total) * (1 - val_fraction);
  double best = INFINITY;
  size_t k = sizes.size();
  int64_t start = 0;  // token position where document d starts in the joined stream
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (d > 0 && std::fabs(double(start) - target) < best)
      best = std::fabs(double(start) - target), k = d;
    start += sizes[d] + gap;
  }
  return k;
}

void append_joined(const std::vector<std::vector<uint32_t>>& docs, size_t begin, size_t end,
                   uint32_t eot, std::vector<uint32_t>& out) {
  for (size_t d = begin; d < end; ++d) {
    if (d > begin) out.push_back(eot);
    out.insert(out.end(), docs[d].begin(), docs[d].end());
  }
}

// Example e of an input as --format sft writes it: under the chat template when there is one, else
// its prompt (after bos, when given) and response. `unit` ("example" or "pair") and k (from 1) name
// it in the error for a conversation without a template.
void append_example(const Tokenizer& tok, std::optional<ChatTemplate> chat,
                    std::optional<uint32_t> bos, const SftExample& e, const std::string& input,
                    const char* unit, size_t k, std::vector<uint32_t>& tokens,
                    std::vector<uint8_t>& mask) {
  TESSERA_CHECK(chat || !e.needs_chat_template(), input, ": ", unit, " ", k, " is a conversation (",
                std::string(unit) == "pair" ? "lists of messages" : "\"messages\"",
                "): give --chat-template (", kChatTemplateNames, ")");
  if (chat)
    append_chat_example(tok, *chat, e, tokens, mask);
  else
    append_sft_example(tok, e, tokens, mask, bos);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

int run(int argc, char** argv) {
  cxxopts::Options options("tokenize",
                           "Text files -> token shards (PREFIX/train_000.bin, val_000.bin)");
  // clang-format off
  options.add_options()
      ("tokenizer", "byte | gpt2 | hf", cxxopts::value<std::string>(), "NAME")
      ("tokenizer-dir", "encoder.json + vocab.bpe directory (gpt2; default data/tokenizers/gpt2), "
       "or tokenizer.json directory (hf; required)",
       cxxopts::value<std::string>(), "DIR")
      // A plain string read repeatedly, not a vector: cxxopts splits vectors at commas.
      ("input", "a text file, one document (repeatable, in order); with --format sft or pairs, a "
       "file of examples or preference pairs", cxxopts::value<std::string>(), "FILE")
      ("format", "text (documents) | sft (prompt/response examples, the responses scored) | "
       "pairs (prompt/chosen/rejected preference pairs for DPO, data/preference.h)",
       cxxopts::value<std::string>()->default_value("text"), "NAME")
      ("output", "output directory; one that already holds shards is refused",
       cxxopts::value<std::string>(), "PREFIX")
      ("val-fraction", "held-out tail fraction of the tokens, in [0, 1)",
       cxxopts::value<double>()->default_value("0.1"), "F")
      ("bos", "start every document (sft, pairs: example) with the tokenizer's beginning-of-text "
       "id, as Llama 3's models expect (hf tokenizers that have one)")
      ("chat-template", "with --format sft or pairs: write every example as a conversation in "
       "this template, the assistant's turns scored: chatml | qwen3 | llama3 (data/chat.h)",
       cxxopts::value<std::string>(), "NAME")
      ("shard-tokens", "tokens per shard file",
       cxxopts::value<int64_t>()->default_value("100000000"), "N")
      ("h,help", "print this help");
  // clang-format on

  cxxopts::ParseResult args;
  if (!parse_flags_or_help(options, argc, argv, args, {"input"})) return 0;
  TESSERA_CHECK(args.count("tokenizer"), "command line: --tokenizer byte|gpt2|hf is required");
  TESSERA_CHECK(args.count("output"), "command line: --output PREFIX is required");
  std::vector<std::string> inputs;
  for (const auto& kv : args.arguments())
    if (kv.key() == "input") inputs.push_back(kv.value());
  TESSERA_CHECK(!inputs.empty(), "command line: at least one --input FILE is required");
  const double val_fraction = args["val-fraction"].as<double>();
  TESSERA_CHECK(val_fraction >= 0 && val_fraction < 1,
                "command line: --val-fraction must be in [0, 1), got ", val_fraction);
  const int64_t shard_tokens = args["shard-tokens"].as<int64_t>();
  TESSERA_CHECK(shard_tokens > 0, "command line: --shard-tokens must be positive, got ",
                shard_tokens);
  const std::string format = args["format"].as<std::string>();
  TESSERA_CHECK(format == "text" || format == "sft" || format == "pairs",
                "command line: --format must be text, sft or pairs, got '", format, "'");
  const bool pairs = format == "pairs";
  const bool masked = format == "sft" || pairs;  // examples with loss masks, each kept whole
  const char* unit = pairs ? "pair" : masked ? "example" : "document";  // what the stream holds
  std::optional<ChatTemplate> chat;
  if (args.count("chat-template")) {
    const std::string t = args["chat-template"].as<std::string>();
    chat = chat_template_named(t);
    TESSERA_CHECK(chat, "command line: --chat-template must be ", kChatTemplateNames, ", got '", t,
                  "'");
    TESSERA_CHECK(masked, "command line: --chat-template goes with --format sft or pairs");
    TESSERA_CHECK(!args.count("bos"),
                  "command line: --bos and --chat-template: the template writes what starts an "
                  "example (llama3: <|begin_of_text|>)");
  }
  const std::string name = args["tokenizer"].as<std::string>();
  TESSERA_CHECK(!args.count("tokenizer-dir") || name != "byte",
                "command line: --tokenizer-dir applies to the gpt2 and hf tokenizers only "
                "(--tokenizer byte)");
  TESSERA_CHECK(name != "hf" || args.count("tokenizer-dir"),
                "command line: --tokenizer hf needs --tokenizer-dir, the directory holding "
                "tokenizer.json");
  const std::string prefix = args["output"].as<std::string>();
  TESSERA_CHECK(!prefix.empty(), "command line: --output is empty; give a directory");
  TESSERA_CHECK(!fs::exists(prefix) || fs::is_directory(prefix), "--output ", prefix,
                " is a file, not a directory (nothing was written)");
  const std::string old = existing_shards(prefix);
  TESSERA_CHECK(old.empty(), "--output ", prefix, " already holds shards (", old,
                "); new ones there would mix with them. Choose another directory or remove "
                "them (nothing was written)");
  std::vector<std::optional<std::string>> piped;  // the text of each input that is a pipe
  for (const auto& path : inputs) piped.push_back(check_input(path));

  const auto t0 = std::chrono::steady_clock::now();
  const std::string dir =
      args.count("tokenizer-dir") ? args["tokenizer-dir"].as<std::string>() : "";
  auto tok = make_tokenizer(name, dir);
  // Resolved before any input is read: a tokenizer without one is refused first.
  const std::optional<uint32_t> bos =
      args.count("bos") ? std::optional(require_bos(*tok, "--bos")) : std::nullopt;
  int64_t bytes = 0, total = 0;
  // text: a document each; sft: an example each; pairs: a pair each, its chosen example and then
  // its rejected one
  std::vector<std::vector<uint32_t>> docs;
  std::vector<std::vector<uint8_t>> masks;  // sft, pairs: each one's loss mask
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string text = piped[i] ? std::move(*piped[i]) : read_input(inputs[i]);
    piped[i].reset();
    bytes += int64_t(text.size());
    if (pairs) {
      const std::vector<PreferenceExample> ps = parse_preference_examples(text, inputs[i]);
      for (size_t k = 0; k < ps.size(); ++k) {
        docs.emplace_back(), masks.emplace_back();
        append_example(*tok, chat, bos, ps[k].chosen, inputs[i], unit, k + 1, docs.back(),
                       masks.back());
        masks.back()[0] |= kMaskPairStart;  // the chosen example's start is the pair's
        append_example(*tok, chat, bos, ps[k].rejected, inputs[i], unit, k + 1, docs.back(),
                       masks.back());
        total += int64_t(docs.back().size());
      }
      continue;
    }
    if (format == "sft") {
      const std::vector<SftExample> examples = parse_sft_examples(text, inputs[i]);
      for (size_t k = 0; k < examples.size(); ++k) {
        docs.emplace_back(), masks.emplace_back();
        append_example(*tok, chat, bos, examples[k], inputs[i], unit, k + 1, docs.back(),
                       masks.back());
        total += int64_t(docs.back().size());
      }
      continue;
    }
    docs.push_back(tok->encode(text));
    if (bos) docs.back().insert(docs.back().begin(), *bos);
    // + the end-of-text before every document but the first
    total += int64_t(docs.back().size()) + (docs.size() > 1 ? 1 : 0);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<uint32_t> train, val;
  std::vector<uint8_t> train_mask, val_mask;
  std::vector<int64_t> sizes;
  size_t k = 0;  // sft, pairs: the first example (pair) in the validation split
  for (const auto& d : docs) sizes.push_back(int64_t(d.size()));
  if (masked) {
    // Examples (pairs) end with their own end-of-text: joined as they are, split between two.
    k = split_point(sizes, 0, val_fraction);
    for (size_t d = 0; d < docs.size(); ++d) {
      (d < k ? train : val).insert((d < k ? train : val).end(), docs[d].begin(), docs[d].end());
      auto& m = d < k ? train_mask : val_mask;
      m.insert(m.end(), masks[d].begin(), masks[d].end());
    }
  } else if (docs.size() == 1) {
    const auto n_val = size_t(std::llround(double(total) * val_fraction));
    train.assign(docs[0].begin(), docs[0].end() - n_val);
    val.assign(docs[0].end() - n_val, docs[0].end());
  } else {
    // Boundary k: val = docs[k..), the end-of-text ids between documents counted.
    const size_t k = split_point(sizes, 1, val_fraction);
    append_joined(docs, 0, k, tok->eot_id(), train);
    append_joined(docs, k, docs.size(), tok->eot_id(), val);
  }
  TESSERA_CHECK(!train.empty(), "the training split is empty (", total,
                " tokens in all, --val-fraction ", val_fraction, ")");
  TESSERA_CHECK(val_fraction == 0 || !val.empty(), "the validation split is empty: ", total,
                " tokens", masked ? " in " + std::to_string(docs.size()) + " " + unit + "(s)" : "",
                " are too few to hold out --val-fraction ", val_fraction);

  // The tokens written: the end-of-text between the splits' documents is in neither.
  const int64_t written_tokens = int64_t(train.size() + val.size());
  std::printf(
      "tokenize: %s (vocab %lld): %zu %s%s, %lld bytes -> %lld tokens in %.1f s "
      "(%.2f MB/s, %.2f bytes/token)\n",
      tok->name().c_str(), (long long)tok->vocab_size(), docs.size(), unit,
      docs.size() == 1 ? "" : "s", (long long)bytes, (long long)written_tokens, seconds,
      seconds > 0 ? double(bytes) / seconds / 1e6 : 0.0,
      written_tokens > 0 ? double(bytes) / double(written_tokens) : 0.0);
  // A failed write (a full disk) takes back the shards already written: a part of the splits
  // would train on a part of the corpus, and the next run would refuse the directory.
  std::vector<std::string> written, train_paths, val_paths;
  const uint8_t start_bit = pairs ? kMaskPairStart : kMaskExampleStart;  // where shards may end
  try {
    train_paths = write_split(prefix, "train", train, train_mask, start_bit, shard_tokens,
                              tok->vocab_size(), &written);
    val_paths = write_split(prefix, "val", val, val_mask, start_bit, shard_tokens,
                            tok->vocab_size(), &written);
  } catch (...) {
    std::error_code ec;
    for (const auto& path : written) fs::remove(path, ec);
    throw;
  }
  std::printf("tokenize: train %zu tokens -> %s\n", train.size(), join(train_paths).c_str());
  if (val_paths.empty()) {
    std::printf("tokenize: no validation split (--val-fraction 0)\n");
  } else {
    const double share = double(val.size()) / double(train.size() + val.size());
    std::printf("tokenize: val   %zu tokens (%.1f%%) -> %s\n", val.size(), 100.0 * share,
                join(val_paths).c_str());
    // Several documents are split between them, each whole in one split: few or unequal ones can
    // put far more (or less) than --val-fraction in validation.
    if (std::fabs(share - val_fraction) > 0.5 * val_fraction)
      std::fprintf(stderr,
                   "tokenize: warning: the validation split holds %.1f%% of the tokens, not the "
                   "%.1f%% --val-fraction asks: each of the %zu %ss stays whole in one "
                   "split; give more, smaller %ss%s for a closer split\n",
                   100.0 * share, 100.0 * val_fraction, docs.size(), unit, unit,
                   masked ? "" : " (or one)");
  }
  if (masked) {
    const auto ones = [](const std::vector<uint8_t>& m) {
      return int64_t(std::count_if(m.begin(), m.end(), [](uint8_t b) { return b & kMaskScored; }));
    };
    std::printf(
        "tokenize: loss masks beside each shard (.mask): %lld of the %zu train tokens "
        "and %lld of the %zu val tokens are scored (responses and their end of text); %ss "
        "1-%zu in train%s\n",
        (long long)ones(train_mask), train.size(), (long long)ones(val_mask), val.size(), unit, k,
        k < docs.size()
            ? (", " + std::to_string(k + 1) + "-" + std::to_string(docs.size()) + " in val").c_str()
            : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("tokenize", [&] { return run(argc, argv); });
}
