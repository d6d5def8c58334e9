// Token shards on disk, in llm.c's format (its dev/data/data_common.py writes them):
//   header: 256 x int32 — [0] magic, [1] version, [2] token count; then the tokens. tessera also
//   writes [3], the vocabulary the ids were written for (llm.c leaves it 0: unknown), so that a
//   byte-level corpus is not read as GPT-2's (the ids of one are valid ids of the other).
//   uint16 tokens: magic 20240520, version 1 (vocabularies up to 65536, e.g. GPT-2, bytes).
//   uint32 tokens: magic 20240801, version 7 (llm.c's Llama-3 shards), for larger vocabularies.
// nanoGPT's raw headerless uint16 files are read when asked for explicitly (ShardFormat::RawU16).
//
// Loss masks (tessera's; supervised fine-tuning, `tokenize --format sft`): beside a shard
// `train_000.bin`, an optional `train_000.mask` says which tokens are scored as targets: a 256 x
// int32 header ([0] magic 20261205, [1] version, [2] the shard's token count), then one byte a
// token. Bit 0 (kMaskScored) is set where the loss counts the prediction of that token, clear where
// it does not (a prompt's). Version 2 adds bit 1 (kMaskExampleStart) on the first token of each
// example, so a loader can make one window of each (loader.h, data.windows: example); version 1
// masks (bytes 0 or 1, no example starts) are still read. Version 3 adds bit 2 (kMaskPairStart) on
// the first token of each preference pair (`tokenize --format pairs`, data/preference.h: a pair is
// its chosen example then its rejected one, and the chosen one's first token has both bits set);
// a mask is written as version 3 only when it holds that bit, so SFT masks stay version 2 byte for
// byte. A Shard opens its mask when the file is there; the loader turns masked targets into the
// ignore index (loader.h).
//
//   write_shard("data/kjv/train_000.bin", tokens, 257);     // picks uint16 for 257 ids
//   Shard s("data/kjv/train_000.bin", 257);                  // validates header, size, ids
//   std::vector<uint32_t> w = s.read(42, 65);                // tokens [42, 107)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data {

constexpr int32_t kShardMagicU16 = 20240520, kShardVersionU16 = 1;
constexpr int32_t kShardMagicU32 = 20240801, kShardVersionU32 = 7;
constexpr int64_t kShardHeaderInts = 256;
constexpr int32_t kMaskMagic = 20261205, kMaskVersion = 2, kMaskVersionPairs = 3;
// The bits of a mask byte. A pair start is always an example start too.
constexpr uint8_t kMaskScored = 1, kMaskExampleStart = 2, kMaskPairStart = 4;

enum class ShardFormat { Header, RawU16 };

// Writes tokens to path (through path + ".tmp", fsynced and renamed into place, so a crash never
// leaves a half-written shard under the final name), creating missing parent directories. uint16
// when vocab_size <= 65536, else uint32. Every token must be < vocab_size (error names the token,
// its position and the path); at most 2^31 - 1 tokens, the header's int32 count.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size);

// The loss mask that belongs to the shard at shard_path: its name with ".bin" replaced by ".mask"
// (".mask" appended to a name without ".bin"), so a train_*.bin glob never matches a mask.
std::string loss_mask_path(const std::string& shard_path);
// Writes mask (one byte a token: kMaskScored | kMaskExampleStart | kMaskPairStart bits) to path as
// write_shard writes a shard: through path + ".tmp", renamed into place, as version 3 when a byte
// has kMaskPairStart and version 2 otherwise. A byte with another bit set, or with kMaskPairStart
// but not kMaskExampleStart, is an error naming its position and the path.
void write_loss_mask(const std::string& path, const std::vector<uint8_t>& mask);

// A shard open for reading. Opening checks the magic, version, that the file size equals
// header + count * token size, and that every token id is < vocab_size; each failure is an error
// naming the path and what disagrees. read() checks again what it reads, so a file truncated or
// rewritten while it is open is an error naming it too, never a crash or a wrong id. Each open
// Shard holds a file descriptor (past the soft limit on open files, the limit is raised).
// With ShardFormat::Header, a loss mask beside the shard (loss_mask_path) is opened and checked
// the same way: magic, version, a count equal to the shard's, the exact size, every byte one its
// version allows (a pair start only in version 3, and only on an example's start).
class Shard {
 public:
  Shard(const std::string& path, int64_t vocab_size, ShardFormat format = ShardFormat::Header);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return count_; }           // number of tokens
  int token_bytes() const { return token_bytes_; }  // 2 (uint16) or 4 (uint32)
  // Tokens [start, start + n) into out[0, n); 0 <= start <= start + n <= size(). Thread-safe.
  void read(int64_t start, int64_t n, uint32_t* out) const;
  std::vector<uint32_t> read(int64_t start, int64_t n) const;
  const std::string& path() const { return path_; }
  // The CRC-32C of the token bytes as stored (after the header), computed at open.
  uint32_t tokens_crc32c() const { return crc_; }
  // The vocabulary the writer recorded (header int 3), 0 where it recorded none (llm.c, RawU16).
  int64_t written_vocab() const { return written_vocab_; }

  // The loss mask, when the shard has one: whether tokens [start, start + n) are scored into out
  // (1 or 0: the kMaskScored bit; the bytes are checked again as read); the count of scored
  // tokens and the CRC-32C of the mask's bytes, computed at open.
  bool has_loss_mask() const { return mask_fd_ >= 0; }
  void read_mask(int64_t start, int64_t n, uint8_t* out) const;
  int64_t mask_scored() const { return mask_scored_; }
  uint32_t mask_crc32c() const { return mask_crc_; }
  // Version 2 masks: the positions of the tokens that start an example, ascending (collected at
  // open; empty for a version 1 mask or none).
  bool has_example_starts() const { return mask_version_ >= 2; }
  const std::vector<int64_t>& example_starts() const { return example_starts_; }
  // Version 3 masks: the positions of the tokens that start a preference pair (each one also in
  // example_starts()), ascending; empty when the mask marks none. Whether pairs and examples
  // alternate as they should is the loader's check (loader.h).
  bool has_pair_starts() const { return !pair_starts_.empty(); }
  const std::vector<int64_t>& pair_starts() const { return pair_starts_; }

 private:
  void read_tokens(int64_t start, int64_t n, uint32_t* out) const;  // no id check
  void open_mask(const std::string& mask_path);  // the checks above; sets the mask_ members

  std::string path_;
  int fd_ = -1;
  int64_t data_offset_ = 0;  // bytes before the first token: the header's, or 0 for RawU16
  int64_t count_ = 0;
  int64_t vocab_size_ = 0;
  int64_t written_vocab_ = 0;
  int token_bytes_ = 2;
  uint32_t crc_ = 0;
  std::string mask_path_;
  int mask_fd_ = -1;
  int mask_version_ = 0;  // 0: no mask
  int64_t mask_scored_ = 0;
  uint32_t mask_crc_ = 0;
  std::vector<int64_t> example_starts_;
  std::vector<int64_t> pair_starts_;
};

}  // namespace tessera::data
